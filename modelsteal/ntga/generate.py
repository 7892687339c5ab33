"""The `generate_ntga` component: a poisoned copy of a training set.

Yuan & Wu, "Neural Tangent Generalization Attacks", ICML 2021,
https://arxiv.org/abs/2106.02963.

The training split is permuted with `seed`; the last `val_size` images of the
permutation are the attack's validation target, the others are poisoned in
blocks of about `block_size` consecutive images of the permutation (random
blocks, each roughly class-balanced). Every image is poisoned: the blocks are
`ceil(N / block_size)` nearly equal parts (512-image blocks over 50,000 images
are 98 blocks of 510 or 511), so no trailing block is dropped and t means the
same in every block. The real test split is never used by the attack.

Output `Examples` artifact:

* `train.npz`: the poisoned images, float32 NHWC in [0, 1] (uint8 only where
  every pixel happens to be a multiple of 1/255), in the order of the source
  training split, with the same labels, and `idx` (each row's index in the
  source training split);
* `val.npz`: the attack's clean validation target, with `idx`;
* `test.npz`: the clean test split, unchanged;
* `examples.png`: clean / perturbation / poisoned images; `blocks.csv`: loss
  and surrogate accuracy per block, before and after the attack.

Each finished block is saved in the component's scratch directory, so an
interrupted run resumes at the first unfinished block and gives the same
result as an uninterrupted one. JAX is imported only when the component runs.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time

import numpy as np

from modelsteal.artifacts import Examples
from modelsteal.component import InputArtifact
from modelsteal.component import OutputArtifact
from modelsteal.component import Parameter
from modelsteal.component import component
from modelsteal.component import scratch_dir
from modelsteal.errors import ConfigError

# Defaults per dataset: the paper's section 4, except CIFAR-10's CNN `t`.
# The paper's t=8 leaves this CNN-GP (on [0, 1] pixels) at chance after
# training on a block, and its poison barely moves it; 4096 did best in a
# sweep of 8/64/512/4096 (BUILD_NOTES.md, "NTGA generation").
DEFAULTS = {
    'mnist': {'eps': 0.3, 't': {'fnn': 64.0, 'cnn': 64.0}},
    'cifar10': {'eps': 8 / 255, 't': {'fnn': 4096.0, 'cnn': 4096.0}},
}


def dataset_defaults(name: str, surrogate: str,
                     shape: tuple | None = None) -> dict:
  """{'eps', 't'} for a dataset: CIFAR-10's for a name with 'cifar' or for
  colour images (`shape` (H, W, 3)), an npz of any name; MNIST's otherwise."""
  colour = shape is not None and len(shape) == 3 and shape[-1] == 3
  key = 'cifar10' if 'cifar' in name.lower() or colour else 'mnist'
  d = DEFAULTS[key]
  return {'eps': d['eps'], 't': d['t'][surrogate]}


def split_for_attack(n: int, val_size: int, seed: int,
                     train_size: int | None = None):
  """(poison order, validation indices) of a training split of n images."""
  if not 0 < val_size < n:
    raise ConfigError('val_size', f'must be in [1, {n - 1}] for a training '
                      f'split of {n} images, got {val_size}.')
  perm = np.random.default_rng(seed).permutation(n)
  poison, val = perm[:n - val_size], perm[n - val_size:]
  if train_size:
    if train_size > len(poison):
      raise ConfigError('train_size', f'{train_size} exceeds the '
                        f'{len(poison)} images left after the {val_size} '
                        'validation images.')
    poison = poison[:train_size]
  return poison, val


def make_blocks(order: np.ndarray, block_size: int) -> list[np.ndarray]:
  """ceil(N / block_size) nearly equal consecutive parts of `order`."""
  if block_size < 2:
    raise ConfigError('block_size', f'must be at least 2, got {block_size}.')
  n_blocks = max(1, math.ceil(len(order) / block_size))
  return np.array_split(order, n_blocks)


def _save_block(path: str, **arrays) -> None:
  tmp = path + '.tmp.npz'
  np.savez(tmp, **arrays)
  os.replace(tmp, path)


def _load_block(path: str, rows: np.ndarray):
  try:
    with np.load(path) as z:
      if z['idx'].shape == rows.shape and np.array_equal(z['idx'], rows):
        return z['x'], json.loads(str(z['stats']))
  except (OSError, ValueError, KeyError, EOFError):
    pass
  return None  # missing, partial or stale: compute it again


def save_grid(path: str, clean: np.ndarray, poisoned: np.ndarray, eps: float,
              n: int = 8) -> None:
  """PNG: rows clean / perturbation (grey = 0, scaled to +-eps) / poisoned."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  n = min(n, len(clean))
  fig, axes = plt.subplots(3, n, figsize=(1.3 * n, 4.2), squeeze=False)
  delta = 0.5 + (poisoned - clean) / (2 * eps)
  rows = [('clean', clean), (f'perturbation (+-{eps:g})', delta),
          ('poisoned', poisoned)]
  for r, (title, imgs) in enumerate(rows):
    for c in range(n):
      ax = axes[r, c]
      img = np.clip(imgs[c], 0, 1)
      if img.shape[-1] == 1:
        ax.imshow(img[..., 0], cmap='gray', vmin=0, vmax=1)
      else:
        ax.imshow(img)
      ax.axis('off')
    axes[r, 0].set_title(title, fontsize=8, loc='left')
  fig.tight_layout()
  tmp = path + '.tmp.png'
  fig.savefig(tmp, dpi=80)
  plt.close(fig)
  os.replace(tmp, path)


def _keep_tf_off_accelerators() -> None:
  """JAX needs the accelerator's memory: TF (imported by the data code, and
  by neural-tangents where kernel_impl='nt') must not claim it."""
  tf = sys.modules.get('tensorflow')
  if tf is not None:
    try:
      tf.config.set_visible_devices([], 'GPU')
    except (RuntimeError, ValueError, AttributeError):
      pass  # already initialised, or no GPU support


def _fmt_time(s: float) -> str:
  return f'{s / 60:.1f}m' if s >= 90 else f'{s:.0f}s'


@component(version='1', later=('val_sample',))
def generate_ntga(*, examples: InputArtifact[Examples],
                  poisoned: OutputArtifact[Examples],
                  surrogate: Parameter[str] = 'fnn',
                  eps: Parameter[float] = 0.3,
                  eps_iter: Parameter[float] = 0.0,
                  t: Parameter[float] = 64.0,
                  nb_iter: Parameter[int] = 10,
                  block_size: Parameter[int] = 512,
                  val_size: Parameter[int] = 10000,
                  train_size: Parameter[int] = 0,
                  seed: Parameter[int] = 0,
                  diag_reg: Parameter[float] = 1e-4,
                  rand_init: Parameter[bool] = False,
                  precision: Parameter[str] = 'float32',
                  kernel_impl: Parameter[str] = 'closed_form',
                  val_batch_size: Parameter[int] = 0,
                  official: Parameter[bool] = False,
                  val_sample: Parameter[int] = 0):
  """Poisons a training set with block-wise NTGA (see the module docstring).

  Args:
    examples: source `Examples` with splits `train` and `test`.
    poisoned: output `Examples` (`train` poisoned, `val`, `test` clean).
    surrogate: `fnn` or `cnn`.
    eps: L-inf budget on [0, 1] pixels.
    eps_iter: PGD step; 0 means min(eps, 2.5 * eps / nb_iter).
    t: GP training time (divided by block size x classes inside).
    nb_iter: PGD steps per block.
    block_size: images per block (blocks are nearly equal parts).
    val_size: validation target images held out of the training split.
    train_size: poison only this many images (0: all the rest); the output's
      `train` split then holds only those.
    seed: permutation and random-start seed.
    diag_reg: GP diagonal regulariser, relative to the mean diagonal.
    rand_init: PGD random start.
    precision: float32 or float64.
    kernel_impl: closed_form (`fnn_ntk` / `cnn_ntk`, fast) or nt
      (neural-tangents' stax kernels).
    val_batch_size: validation images per batch and device; 0: the
      surrogate's default.
    official: the official code's procedure (one gradient at the clean
      block, one full-eps signed step) instead of PGD; nb_iter and eps_iter
      are ignored.
    val_sample: if > 0, each gradient uses this many validation images drawn
      afresh from the `val_size` target (cost of a `val_sample` target).
  """
  from modelsteal.ntga import attack as attack_lib  # pylint: disable=g-import-not-at-top
  from modelsteal.ntga import kernels  # pylint: disable=g-import-not-at-top
  _keep_tf_off_accelerators()
  import jax  # pylint: disable=g-import-not-at-top

  train = examples.load_split('train')
  test = examples.load_split('test')
  x_all, y_all = train['x'], np.asarray(train['y'], np.int64)
  num_classes = int(examples.properties.get('num_classes',
                                            int(y_all.max()) + 1))
  if val_sample > val_size:
    raise ConfigError('val_sample', f'({val_sample}) exceeds the validation '
                      f'target ({{val_size}} {val_size}).')
  poison_order, val_idx = split_for_attack(len(y_all), val_size, seed,
                                           train_size or None)
  blocks = make_blocks(poison_order, block_size)
  sur = kernels.get_surrogate(surrogate, num_classes, kernel_impl)
  cnn_kernel = (kernels.resolve_cnn_impl()
                if surrogate == 'cnn' and kernel_impl == 'closed_form' else None)
  kernel_threads = kernels.cnn_cpu.threads() if cnn_kernel == 'cpu' else None
  cfg = attack_lib.AttackConfig(
      eps=eps, eps_iter=eps_iter or None, nb_iter=nb_iter, t=t,
      diag_reg=diag_reg, rand_init=rand_init, precision=precision,
      val_batch_size=val_batch_size or sur.val_batch_size, official=official,
      val_sample=val_sample)
  cfg.validate()
  scratch = scratch_dir()
  devices = jax.devices()
  print(f'[ntga] {len(poison_order)} images in {len(blocks)} block(s) of '
        f'~{len(blocks[0])}, validation target {len(val_idx)} images'
        + (f' ({val_sample} drawn per gradient)' if val_sample else '')
        + ', '
        f'surrogate {surrogate} ({sur.description}'
        + (f'; cnn_ntk on the {cnn_kernel} kernel' if cnn_kernel else '')
        + (f', {kernel_threads} thread(s)' if kernel_threads else '')
        + f'), eps={eps:g}, '
        f'eps_iter={cfg.step:g}, '
        + ('official one-step mode' if official else f'nb_iter={nb_iter}')
        + f', t={t:g}, {precision}, '
        f'{len(devices)} x {devices[0].platform} device(s); finished blocks '
        f'are kept in {scratch}', flush=True)

  started = time.time()
  with attack_lib.precision_scope(precision):
    attack = attack_lib.NTGA(sur.kernel_fn, x_all[val_idx], y_all[val_idx],
                             num_classes, cfg, devices)
    x_adv, stats = _attack_blocks(attack, x_all, y_all, blocks, scratch,
                                  jax.random.PRNGKey(seed), cfg.steps)

  # back to the source order
  order = np.argsort(poison_order, kind='stable')
  idx_sorted = poison_order[order]
  x_out = x_adv[order]
  clean = x_all[idx_sorted]
  delta = x_out - clean
  poisoned.save_split('train', x_out, y_all[idx_sorted], idx=idx_sorted)
  poisoned.save_split('val', x_all[val_idx], y_all[val_idx], idx=val_idx)
  poisoned.save_split('test', test['x'], test['y'],
                      idx=np.arange(len(test['y'])))
  save_grid(poisoned.path('examples.png'), clean[:8], x_out[:8], eps)
  _write_block_table(poisoned.path('blocks.csv'), stats)
  (loss0, loss1), (acc0, acc1) = (_mean_first_last(stats, 'loss'),
                                  _mean_first_last(stats, 'val_accuracy'))
  seconds = [s['seconds'] for s in stats if 'seconds' in s]
  poisoned.properties.update({
      'name': f'{examples.properties.get("name", "data")}_ntga_{surrogate}',
      'source': examples.properties.get('name'),
      'source_uri': examples.uri,
      'source_fingerprint': examples.fingerprint,
      'num_classes': num_classes,
      'shape': list(x_all.shape[1:]),
      'attack': 'NTGA (Yuan & Wu 2021), block-wise',
      'surrogate': surrogate,
      'surrogate_description': sur.description,
      'eps': eps, 'eps_iter': cfg.step, 'nb_iter': cfg.steps, 't': t,
      'mode': 'official one-step' if official else 'PGD',
      'block_size': block_size, 'blocks': len(blocks),
      'val_size': int(len(val_idx)), 'seed': seed, 'rand_init': rand_init,
      'validation_target': _validation_target(len(val_idx), val_sample),
      'val_sample': val_sample,
      'diag_reg': diag_reg, 'precision': precision,
      'kernel_impl': kernel_impl, 'val_batch_size': cfg.val_batch_size,
      # which code computed cnn_ntk (numba loops on a CPU, XLA elsewhere)
      'cnn_kernel': cnn_kernel, 'cnn_kernel_threads': kernel_threads,
      'sizes': {'train': int(len(idx_sorted)), 'val': int(len(val_idx)),
                'test': int(len(test['y']))},
      'max_abs_perturbation': float(np.max(np.abs(delta))) if delta.size else 0.0,
      'mean_abs_perturbation': float(np.mean(np.abs(delta))) if delta.size else 0.0,
      'surrogate_val_loss': {'clean': loss0, 'poisoned': loss1},
      'surrogate_val_accuracy': {'clean': acc0, 'poisoned': acc1},
      # median: the first block also pays for compilation
      'seconds_per_block_iteration': (
          float(np.median(seconds) / cfg.steps) if seconds else None),
      'seconds_attack': float(np.sum(seconds)) if seconds else None,
      'seconds_total': time.time() - started,
      'devices': f'{len(devices)} x {devices[0].device_kind}',
      'encoding': 'float32 in [0, 1] (uint8 where exact)',
  })
  print(f'[ntga] done: surrogate val loss {loss0:.3f} -> {loss1:.3f}, '
        f'accuracy {100 * acc0:.1f}% -> {100 * acc1:.1f}% (mean over blocks); '
        f'max |delta| {poisoned.properties["max_abs_perturbation"]:.4f}',
        flush=True)


def _attack_blocks(attack, x_all, y_all, blocks, scratch: str, key,
                   steps: int):
  """(poisoned images in block order, per-block stats): each block attacked
  and written to `scratch` as it finishes, or read back from an earlier,
  interrupted run."""
  import jax  # pylint: disable=g-import-not-at-top
  x_adv = np.empty((sum(len(r) for r in blocks),) + x_all.shape[1:],
                   np.float32)
  stats = []
  computed_time, computed_blocks = 0.0, 0
  offset = 0
  for b, rows in enumerate(blocks):
    path = os.path.join(scratch, f'block_{b:05d}.npz')
    found = _load_block(path, rows)
    if found is not None:
      xb_adv, st = found
      note = 'resumed'
    else:
      t0 = time.time()

      def step_line(i, loss, b=b, t0=t0):
        # slow surrogates (CNN on a CPU): a line per PGD step too
        if time.time() - t0 > 20:
          print(f'[ntga]   block {b + 1} step {i + 1}/{steps}: val loss '
                f'{loss:.4f}, {time.time() - t0:.0f}s into the block',
                flush=True)

      xb_adv, st = attack.attack_block(x_all[rows], y_all[rows],
                                       jax.random.fold_in(key, b),
                                       callback=step_line)
      st['seconds'] = time.time() - t0
      _save_block(path, x=xb_adv, idx=rows, stats=json.dumps(st))
      computed_time += st['seconds']
      computed_blocks += 1
      note = f'{st["seconds"]:.1f}s'
    x_adv[offset:offset + len(rows)] = xb_adv
    offset += len(rows)
    st = dict(st, block=b, size=len(rows))
    stats.append(st)
    left = len(blocks) - b - 1
    eta = (computed_time / computed_blocks * left) if computed_blocks else 0
    print(f'[ntga] block {b + 1}/{len(blocks)} ({len(rows)} images): val '
          f'loss {st["loss"][0]:.3f} -> {st["loss"][-1]:.3f}, surrogate val '
          f'acc {100 * st["val_accuracy"][0]:.1f}% -> '
          f'{100 * st["val_accuracy"][-1]:.1f}%, {note}'
          + (f', ETA {_fmt_time(eta)}' if left and computed_blocks else ''),
          flush=True)
  return x_adv, stats


def _mean_first_last(stats: list[dict], key: str) -> tuple[float, float]:
  """The mean over blocks of a per-step figure's first and last value."""
  return (float(np.mean([s[key][0] for s in stats])),
          float(np.mean([s[key][-1] for s in stats])))


def _validation_target(size: int, val_sample: int) -> str:
  """The run record's words on the validation target."""
  return (f'{size} training images held out of the poisoned set; the attack '
          'maximises the surrogate GP loss on them, so a smaller target makes '
          "each gradient proportionally cheaper and the attack's objective "
          'noisier'
          + (f'; each gradient and final loss used {val_sample} of them, '
             'drawn afresh (the loss figures are estimates from those draws)'
             if val_sample else ''))


def _write_block_table(path: str, stats: list[dict]) -> None:
  lines = ['block,size,loss_clean,loss_poisoned,val_acc_clean,'
           'val_acc_poisoned,seconds']
  for s in stats:
    lines.append(f'{s["block"]},{s["size"]},{s["loss"][0]:.6f},'
                 f'{s["loss"][-1]:.6f},{s["val_accuracy"][0]:.6f},'
                 f'{s["val_accuracy"][-1]:.6f},{s.get("seconds", "")}')
  with open(path, 'w') as f:
    f.write('\n'.join(lines) + '\n')


def export_npz(poisoned: Examples, path: str) -> str:
  """Writes the poisoned set as it is handed to others (NTGA competitions).

  One compressed `.npz` with `x_train` (poisoned, float32 NHWC in [0, 1]),
  `y_train`, `idx_train` (each row's index in the source training split),
  and the clean `x_test`, `y_test`. Written to a temporary file and renamed.

  Returns:
    The path written.
  """
  train = poisoned.load_split('train')
  test = poisoned.load_split('test')
  path = os.path.abspath(path)
  if not path.endswith('.npz'):
    path += '.npz'
  os.makedirs(os.path.dirname(path), exist_ok=True)
  tmp = path + '.tmp.npz'
  np.savez_compressed(tmp, x_train=train['x'].astype(np.float32),
                      y_train=train['y'], idx_train=train['idx'],
                      x_test=test['x'].astype(np.float32), y_test=test['y'])
  os.replace(tmp, path)
  return path
