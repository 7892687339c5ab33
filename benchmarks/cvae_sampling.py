"""How the built-in CVAE's latent sampling changes classifiers trained on it.

    python benchmarks/cvae_sampling.py SPLITS_DIR [--variants=prior,t0.8,fitted]

SPLITS_DIR is a `split_data` artifact's `splits/` directory (the one
`pipelines.synthetic` / `pipelines.steal` made; it holds `pool.npz` and
`test.npz`). The script trains the conditional VAE on `pool` exactly as
`pipelines.train_generator` does (resumable; weights cached in --out), then
for each latent variant draws 1,000 images per class with Bernoulli-sampled
pixels, trains `mnist_cnn` on them with the stealing recipe for 10,000
images, and reports real-test accuracy (CSV in --out, table on stdout).

Variants:
  prior     z ~ N(0, I): the exported generator with --generator_latent=prior.
  tT        z ~ N(0, T^2 I), a temperature (e.g. t0.8).
  fitted    z ~ N(m_c, S_c): per class, the moments of the encoder's
            aggregate posterior q(z | c) (`modelsteal.synthetic.cvae.fit_latent`).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..'))


def latent_sampler(model, x, y, variant):
  """Returns f(c, eps) -> z for one variant."""
  from modelsteal.synthetic.cvae import fit_latent  # pylint: disable=g-import-not-at-top
  if variant == 'prior':
    return lambda c, eps: eps
  if variant.startswith('t'):
    t = float(variant[1:])
    return lambda c, eps: t * eps
  if variant != 'fitted':
    raise SystemExit(f'error: unknown variant {variant!r}')
  means, chols = fit_latent(model, x, y)
  return lambda c, eps: means[c] + eps @ chols[c].T


def main():
  ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  ap.add_argument('splits')
  ap.add_argument('--variants', default='prior,t0.8,fitted')
  ap.add_argument('--epochs', type=int, default=30)
  ap.add_argument('--per_class', type=int, default=1000)
  ap.add_argument('--arch', default='mnist_cnn')
  ap.add_argument('--seed', type=int, default=0)
  ap.add_argument('--decoder', default='mlp', choices=['mlp', 'conv'])
  ap.add_argument('--out', default='bench_runs/cvae_sampling')
  a = ap.parse_args()
  import keras  # pylint: disable=g-import-not-at-top
  import pandas as pd  # pylint: disable=g-import-not-at-top
  from modelsteal.synthetic.cvae import build_cvae, train_cvae  # pylint: disable=g-import-not-at-top
  from modelsteal.artifacts import load_split  # pylint: disable=g-import-not-at-top
  from modelsteal.training import TrainConfig, predict_probs, train_classifier  # pylint: disable=g-import-not-at-top
  pool = load_split(os.path.join(a.splits, 'pool.npz'))
  test = load_split(os.path.join(a.splits, 'test.npz'))
  x, y = pool['x'].astype(np.float32), pool['y'].astype(np.int64)
  k = int(y.max() + 1)
  os.makedirs(a.out, exist_ok=True)
  tag = f'{a.decoder}_e{a.epochs}_s{a.seed}'
  weights = os.path.join(a.out, f'cvae_{tag}.weights.h5')
  if os.path.exists(weights):
    model = build_cvae(x.shape[1:], k, seed=a.seed, decoder=a.decoder)
    model.load_weights(weights)
    print(f'cvae: reused {weights}', flush=True)
  else:
    t = time.time()
    model = train_cvae(x, y, k, epochs=a.epochs, seed=a.seed,
                       decoder=a.decoder,
                       backup_dir=os.path.join(a.out, f'backup_{tag}'))
    model.save_weights(weights)
    print(f'cvae: trained in {time.time() - t:.1f}s', flush=True)
  # The stealing recipe for 10,000 images (modelsteal.experiments.recipes.student_recipe).
  n = a.per_class * k
  recipe = TrainConfig(epochs=int(min(60, max(12, round(120_000 / n)))),
                       batch_size=64 if n < 5000 else 128, learning_rate=2e-3,
                       augment=True)
  rows = []
  csv = os.path.join(a.out, f'results_{tag}.csv')
  for variant in a.variants.split(','):
    sampler = latent_sampler(model, x, y, variant)
    rng = np.random.default_rng(a.seed)
    imgs, labels = [], []
    for c in range(k):
      eps = rng.standard_normal((a.per_class, model.latent_dim)).astype(np.float32)
      z = sampler(c, eps).astype(np.float32)
      p = keras.ops.sigmoid(model.decode_logits(
          keras.ops.convert_to_tensor(z), np.full(a.per_class, c))).numpy()
      imgs.append((rng.random(p.shape) < p).astype(np.float32))
      labels.append(np.full(a.per_class, c))
    gx, gy = np.concatenate(imgs), np.concatenate(labels)
    t = time.time()
    clf = train_classifier(a.arch, gx, gy, k, recipe, seed=a.seed,
                           desc=f'{a.arch} on {variant}')
    acc = float((predict_probs(clf, test['x']).argmax(1) == test['y']).mean())
    rows.append({'decoder': a.decoder, 'variant': variant, 'arch': a.arch, 'images': len(gx),
                 'test_accuracy': round(100 * acc, 2),
                 'train_s': round(time.time() - t, 1)})
    print(rows[-1], flush=True)
    pd.DataFrame(rows).to_csv(csv, index=False)
  print(pd.DataFrame(rows).to_string(index=False))
  print(f'results: {csv}')


if __name__ == '__main__':
  main()
