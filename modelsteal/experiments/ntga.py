"""Unlearnable data: block-wise NTGA (Yuan & Wu, ICML 2021,
https://arxiv.org/abs/2106.02963) over a whole training set, with the run
record and a printed summary.

    from modelsteal.experiments import ntga
    ntga.run(ntga.NtgaConfig(dataset='mnist', surrogate='fnn'))
"""

from __future__ import annotations

import dataclasses
import os
import time

from modelsteal.experiments.common import shrink


@dataclasses.dataclass(frozen=True)
class NtgaConfig:
  """Block-wise NTGA over a training set; see `modelsteal.ntga`."""
  dataset: str = 'mnist'
  data_dir: str | None = None
  surrogate: str = 'fnn'
  eps: float | None = None
  t: float | None = None
  block_size: int = 512
  nb_iter: int = 10
  eps_iter: float | None = None
  rand_init: bool = False
  val_size: int = 10000
  train_size: int = 0
  precision: str = 'float32'
  kernel_impl: str = 'closed_form'
  val_batch_size: int = 0
  official: bool = False
  val_sample: int = 0
  export_npz: str | None = None
  workdir: str = './runs'
  seed: int = 0
  smoke: bool = False




def run(cfg: NtgaConfig):
  """Runs the pipeline; returns the component's `RunResult`."""
  from modelsteal import data as data_lib  # pylint: disable=g-import-not-at-top
  from modelsteal import ntga  # pylint: disable=g-import-not-at-top

  started = time.time()
  ds = data_lib.load_dataset(cfg.dataset, cfg.data_dir)
  print(f'[ntga] data: {ds.name} from {ds.source}: {len(ds.y_train)} train / '
        f'{len(ds.y_test)} test images {ds.shape}', flush=True)
  val_size, train_size, block_size, nb_iter = (cfg.val_size, cfg.train_size,
                                               cfg.block_size, cfg.nb_iter)
  val_sample = cfg.val_sample
  if cfg.smoke:
    ds = shrink(ds, 600, 200)
    val_size, block_size, nb_iter = min(200, len(ds.y_train) // 2), 128, 2
    val_sample = min(val_sample, val_size // 2)
    room = len(ds.y_train) - val_size
    train_size = min(train_size or room, 256, room)
  examples = data_lib.import_dataset(ds, cfg.workdir)
  defaults = ntga.dataset_defaults(ds.name, cfg.surrogate, ds.shape)
  eps = cfg.eps if cfg.eps is not None else defaults['eps']
  t = cfg.t if cfg.t is not None else defaults['t']
  result = ntga.generate_ntga.run(
      cfg.workdir, examples=examples, surrogate=cfg.surrogate, eps=eps,
      eps_iter=cfg.eps_iter or 0.0, t=t, nb_iter=nb_iter,
      block_size=block_size, val_size=val_size, train_size=train_size,
      seed=cfg.seed, rand_init=cfg.rand_init, precision=cfg.precision,
      kernel_impl=cfg.kernel_impl, val_batch_size=cfg.val_batch_size,
      official=cfg.official, val_sample=val_sample)
  art = result['poisoned']
  p = art.properties
  note = 'reused' if result.reused else f'{result.duration_s:.1f}s'
  rows = [
      ('dataset', f'{p["source"]} ({p["sizes"]["train"]} poisoned, '
                  f'{p["sizes"]["val"]} validation target)'),
      ('validation draws', f'{p["val_sample"]} images per gradient'
       if p.get('val_sample') else 'the whole target'),
      ('surrogate', f'{p["surrogate"]}: {p["surrogate_description"]}'),
      ('eps / eps_iter / nb_iter / t',
       f'{p["eps"]:g} / {p["eps_iter"]:g} / {p["nb_iter"]} / {p["t"]:g}'
       + (' (official one-step mode)' if cfg.official else '')),
      ('blocks', f'{p["blocks"]} of ~{p["sizes"]["train"] // p["blocks"]}'),
      ('surrogate val loss', f'{p["surrogate_val_loss"]["clean"]:.4f} -> '
                             f'{p["surrogate_val_loss"]["poisoned"]:.4f}'),
      ('surrogate val accuracy',
       f'{100 * p["surrogate_val_accuracy"]["clean"]:.2f}% -> '
       f'{100 * p["surrogate_val_accuracy"]["poisoned"]:.2f}%'),
      ('max / mean |delta|', f'{p["max_abs_perturbation"]:.4f} / '
                             f'{p["mean_abs_perturbation"]:.4f}'),
      ('s per block-iteration',
       'n/a' if p['seconds_per_block_iteration'] is None else
       f'{p["seconds_per_block_iteration"]:.3f} ({p["devices"]})'),
      ('run', note),
  ]
  print()
  for k, v in rows:
    print(f'  {k:<30} {v}')
  print(f'\npoisoned: {art.uri}')
  print(f'grid:     {art.path("examples.png")}')
  print(f'record:   {os.path.join(result.execution_dir, "execution.json")}')
  if cfg.export_npz:
    path = ntga.export_npz(art, cfg.export_npz)
    print(f'npz:      {path}')
  print(f'total time {time.time() - started:.1f}s', flush=True)
  return result


