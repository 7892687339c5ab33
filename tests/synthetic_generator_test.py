"""modelsteal.synthetic: the generator interface, the exported conditional
VAE as a black box (reload, reproduce, serve over HTTP), mining with its
image cache, resume and confidence filter. Tiny 12x12 images, 4 classes."""

import numpy as np
import pytest

from modelsteal import serving
from modelsteal import synthetic
from modelsteal.synthetic import cvae
from modelsteal.synthetic import rest
from tests.conftest import synthetic_images

NAMES = ['a', 'b', 'c', 'd']


@pytest.fixture(scope='module')
def trained():
  x, y = synthetic_images(256, seed=11)
  return cvae.train_cvae(x, y, 4, epochs=1, latent_dim=4, hidden=(32,),
                         seed=0)


@pytest.fixture(scope='module')
def exported(trained, tiny_model, tmp_path_factory):
  """(SavedModel dir with `classify`, SavedModel dir without)."""
  base = tmp_path_factory.mktemp('gen')
  with_clf = cvae.export_generator(trained, str(base / 'with'), NAMES,
                                   classifier=tiny_model)
  plain = cvae.export_generator(trained, str(base / 'plain'), NAMES)
  return with_clf, plain


@pytest.mark.slow
def test_shapes_range_count_and_seeds(exported):
  gen = synthetic.SavedModelGenerator(exported[0])
  assert gen.class_names == tuple(NAMES) and gen.image_shape == (12, 12, 1)
  for label in (0, 'b', 'D'):
    x = gen.generate(label, 7, seed=3)
    assert x.shape == (7, 12, 12, 1) and x.dtype == np.float32
    assert set(np.unique(x)) <= {0.0, 1.0}  # Bernoulli-sampled pixels
  np.testing.assert_array_equal(gen.generate('b', 5, seed=1),
                                gen.generate(1, 5, seed=1))
  assert not np.array_equal(gen.generate(1, 5, seed=1),
                            gen.generate(1, 5, seed=2))
  assert gen.generate(0, 0).shape == (0, 12, 12, 1)
  mean = synthetic.SavedModelGenerator(exported[0], pixels='mean')
  m = mean.generate(2, 4, seed=0)
  assert 0.0 <= m.min() and m.max() <= 1.0 and len(np.unique(m)) > 2


def test_export_reloads_and_reproduces_the_keras_model(trained, exported):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  loaded = tf.saved_model.load(exported[1])
  rng = np.random.default_rng(0)
  noise = rng.standard_normal((6, 4 + 144)).astype(np.float32)
  labels = np.array([0, 1, 2, 3, 0, 1], np.int64)
  p = tf.sigmoid(trained.decode_logits(tf.constant(noise[:, :4]),
                                     labels)).numpy()
  got = loaded.signatures['generate_mean'](label=labels, noise=noise)
  np.testing.assert_allclose(got['images'].numpy(), p, atol=1e-5)
  u = 0.5 * (1 + tf.math.erf(noise[:, 4:] / np.sqrt(2))).numpy()
  want = (u.reshape(p.shape) < p).astype(np.float32)
  sampled = loaded.signatures['generate'](label=labels, noise=noise)['images']
  assert (sampled.numpy() != want).mean() < 0.01  # float ties at most
  again = synthetic.SavedModelGenerator(exported[1])
  np.testing.assert_array_equal(
      again.generate('c', 8, seed=5),
      synthetic.SavedModelGenerator(exported[0]).generate('c', 8, seed=5))
  assert again.scores(p) is None  # no classifier exported with it


def test_fitted_latent_has_the_posterior_moments_and_exports(trained,
                                                            tmp_path):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  x, y = synthetic_images(256, seed=11)
  means, chols = cvae.fit_latent(trained, x, y)
  assert means.shape == (4, 4) and chols.shape == (4, 4, 4)
  stats = trained.encoder([tf.constant(x.reshape(256, -1)),
                           tf.one_hot(y, 4)]).numpy()
  mu, var = stats[y == 1, :4], np.exp(stats[y == 1, 4:])
  np.testing.assert_allclose(means[1], mu.mean(0), rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(
      chols[1] @ chols[1].T, np.cov(mu, rowvar=False) + np.diag(var.mean(0)),
      rtol=1e-3, atol=1e-5)
  path = cvae.export_generator(trained, str(tmp_path / 'fitted'), NAMES,
                               fitted_latent=(means, chols))
  noise = np.random.default_rng(0).standard_normal((3, 4 + 144)).astype(
      np.float32)
  labels = np.array([1, 2, 3], np.int64)
  z = means[labels] + np.einsum('nij,nj->ni', chols[labels], noise[:, :4])
  want = tf.sigmoid(trained.decode_logits(tf.constant(z), labels)).numpy()
  got = tf.saved_model.load(path).signatures['generate_mean'](
      label=labels, noise=noise)['images'].numpy()
  np.testing.assert_allclose(got, want, atol=1e-5)
  prior = tf.sigmoid(trained.decode_logits(tf.constant(noise[:, :4]),
                                           labels)).numpy()
  assert np.abs(got - prior).max() > 1e-3  # the fitted latent is used


@pytest.mark.slow
def test_conv_decoder_shapes_and_errors():
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  x, y = synthetic_images(64, seed=2)
  m = cvae.train_cvae(x, y, 4, epochs=1, latent_dim=4, hidden=(16,),
                      decoder='conv')
  assert m.decode_logits(tf.zeros([2, 4]), np.array([0, 1])).shape == (
      2, 12, 12, 1)
  with pytest.raises(ValueError, match='multiples of 4'):
    cvae.build_cvae((10, 10, 1), 4, decoder='conv')
  with pytest.raises(ValueError, match='unknown decoder'):
    cvae.build_cvae((12, 12, 1), 4, decoder='gan')


def test_unknown_class_and_non_generators_are_clear_errors(exported,
                                                           tiny_model,
                                                           tmp_path):
  gen = synthetic.SavedModelGenerator(exported[0])
  with pytest.raises(synthetic.GeneratorError,
                     match="does not know the class 'dog'.*'a', 'b'"):
    gen.generate('dog', 2)
  with pytest.raises(synthetic.GeneratorError, match='does not know'):
    gen.generate(4, 2)
  from modelsteal.export import export_saved_model  # pylint: disable=g-import-not-at-top
  clf = export_saved_model(tiny_model, str(tmp_path / 'clf'))
  with pytest.raises(synthetic.GeneratorError, match='not a generator'):
    synthetic.SavedModelGenerator(clf)
  with pytest.raises(synthetic.GeneratorError, match='no such directory'):
    synthetic.SavedModelGenerator(str(tmp_path / 'nothing'))


@pytest.mark.slow
def test_mining_caches_resumes_and_filters(exported, tmp_path):
  wd = str(tmp_path)
  ref = synthetic.generator_ref_from_path(exported[0])
  first = synthetic.mine_images.run(wd, generator=ref, per_class=10, chunk=4)
  art = first['mined']
  data = art.load_split('train')
  assert data['x'].shape == (40, 12, 12, 1)
  np.testing.assert_array_equal(np.bincount(data['y']), [10] * 4)
  assert art.properties['images_fresh'] == 48  # 3 chunks of 4 per class
  assert art.properties['filter'] == 'none'
  more = synthetic.mine_images.run(wd, generator=ref, per_class=14, chunk=4,
                                   heldout_fraction=0.25)['mined']
  assert more.properties['images_fresh'] == 16  # only the 4th chunk is new
  bigger = more.load_split('train')
  for c in range(4):
    np.testing.assert_array_equal(bigger['x'][bigger['y'] == c][:10],
                                  data['x'][data['y'] == c])
  assert more.properties['sizes'] == {'train': 56, 'heldout': 14, 'pool': 42}
  assert len(more.load_split('pool')['x']) == 42
  kept = synthetic.mine_images.run(wd, generator=ref, per_class=5, chunk=4,
                                   min_confidence=0.3)['mined']
  got = kept.load_split('train')
  assert (got['confidence'] >= 0.3).all() and len(got['y']) == 20
  assert kept.properties['filter'] == 'confidence:0.3'
  mean = synthetic.mine_images.run(wd, generator={**ref, 'pixels': 'mean'},
                                   per_class=2, chunk=4)['mined']
  assert len(np.unique(mean.load_split('train')['x'])) > 2  # not the cache
  plain = synthetic.generator_ref_from_path(exported[1])
  with pytest.raises(synthetic.GeneratorError, match='no classifier'):
    synthetic.mine_images.run(wd, generator=plain, per_class=2, chunk=4,
                              min_confidence=0.5)
  with pytest.raises(ValueError, match='per_class must be at least 1'):
    synthetic.mine_images.run(wd, generator=ref, per_class=0)


def test_the_exported_generator_is_served_and_reached_over_http(
    exported, monkeypatch):
  monkeypatch.setattr(rest, '_sleep', lambda s: None)
  base = exported[0].rsplit('/', 1)[0]
  ms = serving.ModelServer([serving.load_servable(base, 'gen')])
  with serving.BackgroundServer(ms.make_app()) as bg:
    gen = rest.RestGenerator(bg.url + '/v1/models/gen', api='tfserving',
                             class_names=NAMES, image_shape=(12, 12, 1),
                             requests_per_s=1000.0, images_per_request=3)
    x = gen.generate('c', 5, seed=0)
  assert x.shape == (5, 12, 12, 1) and set(np.unique(x)) <= {0.0, 1.0}
  assert gen.requests_sent == 3  # metadata, then 3 + 2 images
