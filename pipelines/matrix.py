r"""Attacks x the owner's defences over the REST server: one table.

    python -m pipelines.matrix --victim=mnist_cnn --dataset=mnist \
        --knockoff_data=fashion_mnist [--attacks=random,knockoff,margin] \
        [--defenses=none,label,misinfo:0.8,block,watermark] [--budget=10000]

Columns (`--defenses`): `none`, any output defence of pipelines.serve
(`label`, `topk:K`, `rounded:D`, `cutoff:T`, `noise:S`,
`reverse_sigmoid:B,G`, `misinfo:TAU`), `block` (the detectors block a
flagged client) and `watermark` (answers carry the watermark; the cell
gets the ownership p-value of the stolen student). Rows (`--attacks`):
`random` (the attacker's half of the data), `knockoff`
(`--knockoff_data`) and `margin` (the attacker's half, chosen in
`--active_rounds` rounds by ActiveThief's margin strategy). Every column also runs the detectors (`--detect`,
default prada,shift) and an honest client (`--honest_images` test images).

Writes `<workdir>/matrix/<run>/cells.{json,csv}` and `fidelity.png`;
finished cells are kept as they finish, so the same command resumes.
Figures on MNIST: BUILD_NOTES.md, "Owner's side".
"""

from __future__ import annotations

import sys

from absl import app
from absl import flags

from pipelines import _owner_flags
from pipelines import _steal_flags
from pipelines import common

_ATTACKS = flags.DEFINE_list('attacks', ['random', 'knockoff'],
                             'Rows: random, knockoff, margin.')
_ACTIVE_ROUNDS = flags.DEFINE_integer(
    'active_rounds', 4, 'Rounds of the margin attack (a random seed set, '
    'then rounds the student of the round before chooses).')
_DEFENSES = flags.DEFINE_string(
    'defenses', 'none;label;misinfo:0.8;block;watermark',
    "Columns, separated by ';' (or ',' where no spec has a comma): none, an "
    'output defence spec, block, watermark.')
_KNOCKOFF = flags.DEFINE_string('knockoff_data', None, 'The knockoff '
                                "attack's queries (dataset name or path).")
_HONEST = flags.DEFINE_integer('honest_images', 2000, 'Test images the '
                               'honest client streams per column.')
_STUDENT = flags.DEFINE_string('student', None, "The students' "
                               "architecture (default: the victim's).")


def _columns(text: str) -> tuple[str, ...]:
  sep = ';' if ';' in text else ','
  return tuple(c.strip() for c in text.split(sep) if c.strip())


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')

  def body():
    from modelsteal.experiments import matrix  # pylint: disable=g-import-not-at-top
    cfg = matrix.MatrixConfig(
        victim=_steal_flags._VICTIM.value,  # pylint: disable=protected-access
        dataset=common.DATASET.value, knockoff_data=_KNOCKOFF.value,
        attacks=tuple(_ATTACKS.value), defenses=_columns(_DEFENSES.value),
        budget=_steal_flags._BUDGET.value,  # pylint: disable=protected-access
        active_rounds=_ACTIVE_ROUNDS.value, student=_STUDENT.value, honest_images=_HONEST.value,
        watermark_rate=_owner_flags.WATERMARK_RATE.value,
        detect=_owner_flags.DETECT.value or 'prada,shift',
        workdir=common.WORKDIR.value, seed=common.SEED.value,
        smoke=common.SMOKE.value)
    res = matrix.run(cfg)
    import pandas as pd  # pylint: disable=g-import-not-at-top
    df = pd.DataFrame(res['cells'])
    cols = [c for c in ('defense', 'attack', 'fidelity', 'accuracy',
                        'honest_accuracy', 'prada_flagged_at',
                        'shift_flagged_at', 'blocked', 'p_value')
            if c in df.columns]
    with pd.option_context('display.width', 200):
      print(df[cols].to_string(index=False))
    print(f'\ncells:   {res["dir"]}/cells.csv (and .json)\nheat map: '
          f'{res["plot"]}\ntotal time {res["seconds"]}s', flush=True)
    sys.stdout.flush()

  common.run_main(body, 'matrix')


if __name__ == '__main__':
  app.run(main)
