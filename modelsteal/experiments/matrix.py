"""Attacks against the owner's defences, cell by cell, over the REST server.

    python -m pipelines.matrix --victim=mnist_cnn --dataset=mnist \
        --knockoff_data=fashion_mnist --attacks=random,knockoff,margin \
        --defenses=none,label,topk:1,rounded:1,noise:0.3,misinfo:0.8,block,watermark

For each defence column the zoo victim (trained once, cached) is served in
this process (`modelsteal.serving`, loopback, a free port) with one API key
per client, a query log, the detectors (`prada`, `shift`; flag only, or
block in the `block` column) and, in the `watermark` column, the watermark.
An honest client streams test images first; then each attack asks for
probabilities, `budget` queries from its source (`random`: the attacker's
half; `knockoff`: `knockoff_data`; `margin`: the attacker's half in
`active_rounds` rounds, a random seed set and then the images the student
of the round before is least sure of, ActiveThief's margin), and a student
learns from the answers.
Only the queries go over HTTP: the victim is scored and the students are
compared with it locally, so the detectors see the attack and nothing else.

Each cell: the student's accuracy and its fidelity to the undefended victim,
the honest client's accuracy in that column, the query at which each
detector flagged the attacker (or never), and the ownership p-value of the
student (`pipelines.verify`'s test; the watermark column only). Finished
cells are kept in `cells.json` as they finish: a rerun resumes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time

import numpy as np

from modelsteal.errors import ConfigError
from modelsteal.errors import literal

ATTACKS = ('random', 'knockoff', 'margin')
OWNER_COLUMNS = ('none', 'block', 'watermark')


@dataclasses.dataclass(frozen=True)
class MatrixConfig:
  victim: str = 'mnist_cnn'
  dataset: str | None = None
  knockoff_data: str | None = None
  attacks: tuple[str, ...] = ('random', 'knockoff')
  defenses: tuple[str, ...] = ('none', 'label', 'misinfo:0.8', 'block',
                               'watermark')
  budget: int = 10000
  active_rounds: int = 4  # the margin attack's rounds, the seed set included
  student: str | None = None  # default: the victim's architecture
  honest_images: int = 2000
  watermark_rate: float = 0.005
  detect: str = 'prada,shift'
  workdir: str = './runs'
  seed: int = 0
  smoke: bool = False

  def __post_init__(self):
    from modelsteal.defenses.detection import parse_detectors  # pylint: disable=g-import-not-at-top
    from modelsteal.defenses.output import parse_output  # pylint: disable=g-import-not-at-top
    if not self.attacks:
      raise ConfigError('attacks', 'is empty; name at least one of '
                        f'{", ".join(ATTACKS)}.')
    for a in self.attacks:
      if a not in ATTACKS:
        raise ConfigError('attacks', f': unknown attack {literal(repr(a))}; '
                          f'known: {", ".join(ATTACKS)}.')
    if 'knockoff' in self.attacks and not self.knockoff_data:
      raise ConfigError('attacks', '=knockoff draws its queries from another '
                        'dataset: give {knockoff_data} (e.g. fashion_mnist).')
    if not self.defenses:
      raise ConfigError('defenses', 'is empty.')
    for d in self.defenses:
      if d not in OWNER_COLUMNS:
        parse_output(d, field='defenses')
    if len(set(self.defenses)) != len(self.defenses):
      raise ConfigError('defenses', 'names a column twice.')
    if self.budget < 10:
      raise ConfigError('budget', f'must be at least 10, got {self.budget}.')
    if not 2 <= self.active_rounds <= self.budget // 2:
      raise ConfigError('active_rounds', 'must be at least 2 (a seed set and '
                        'one chosen round) and at most half the budget, got '
                        f'{self.active_rounds}.')
    if self.honest_images < 1:
      raise ConfigError('honest_images', 'must be at least 1.')
    # shift's reference comes later (the victim's own data): check the
    # spec's form now with the other detectors alone.
    parse_detectors(','.join(p for p in self.detect.split(',')
                             if p.split(':')[0].strip() != 'shift'),
                    field='detect')


def _column_guard(cfg, column, clients, log_dir, reference, key):
  from modelsteal.defenses import detection  # pylint: disable=g-import-not-at-top
  from modelsteal.defenses import watermark  # pylint: disable=g-import-not-at-top
  from modelsteal.serving import guard  # pylint: disable=g-import-not-at-top
  return guard.Guard(guard.GuardConfig(
      clients=tuple(clients), log_dir=log_dir, fsync=False,
      detectors=tuple(detection.parse_detectors(cfg.detect, reference)),
      on_detect='block' if column == 'block' else 'flag',
      watermark=(watermark.Watermark(key, cfg.watermark_rate)
                 if column == 'watermark' else None)), seed=cfg.seed)


def _ask(url, key, x, batch=200):
  import requests  # pylint: disable=g-import-not-at-top
  s = requests.Session()
  s.headers['Authorization'] = f'Bearer {key}'
  out = []
  for i in range(0, len(x), batch):
    r = s.post(url + ':predict', timeout=120,
               json={'instances': x[i:i + batch].tolist()})
    if r.status_code == 403:  # blocked: the rest is refused
      return np.asarray(out), i
    r.raise_for_status()
    for p in r.json()['predictions']:
      if isinstance(p, dict):  # several outputs: a row of named values
        out.append(int(np.argmax(p['probabilities'])) if 'probabilities' in p
                   else int(p['label']))
      else:  # one output: the label itself (a label-only server)
        out.append(int(np.argmax(p)) if isinstance(p, list) else int(p))
  return np.asarray(out), len(x)


def run(cfg: MatrixConfig, progress=print) -> dict:
  """Runs every cell not finished yet; returns {'cells': [...], 'dir'}."""
  import pandas as pd  # pylint: disable=g-import-not-at-top
  from modelsteal import serving  # pylint: disable=g-import-not-at-top
  from modelsteal.defenses import detection  # pylint: disable=g-import-not-at-top
  from modelsteal.defenses import watermark  # pylint: disable=g-import-not-at-top
  from modelsteal.experiments import stealing  # pylint: disable=g-import-not-at-top
  from modelsteal.export import load_predictor  # pylint: disable=g-import-not-at-top
  from modelsteal.files import atomic_write  # pylint: disable=g-import-not-at-top
  from modelsteal.oracle.remote import API_KEY_ENV  # pylint: disable=g-import-not-at-top
  from modelsteal.oracle.rest import victim_ref_from_url  # pylint: disable=g-import-not-at-top
  from modelsteal.serving import access  # pylint: disable=g-import-not-at-top
  from modelsteal.serving import querylog  # pylint: disable=g-import-not-at-top
  started = time.time()
  base = stealing.StealConfig(
      victim=cfg.victim, dataset=cfg.dataset, budgets=(cfg.budget,),
      budget_chosen=True, workdir=cfg.workdir, seed=cfg.seed,
      smoke=cfg.smoke, output='probs',
      students=(cfg.student,) if cfg.student else ())
  p = stealing.prepare(base, 'matrix')
  # prepare caps the budget to a smoke or offline pool: every cell uses it
  budget = p.budgets[0]
  base = dataclasses.replace(base, budgets=(budget,))
  arch = p.students[0]
  test = p.splits.load_split('test')
  x_test, y_test = test['x'].astype(np.float32), test['y']
  victim_local = load_predictor(p.victim.ref.location, trusted=True)
  owner_x = p.splits.load_split('victim')['x'].astype(np.float32)
  rng = np.random.default_rng(cfg.seed)
  ref_x = owner_x[rng.choice(len(owner_x), min(2000, len(owner_x)),
                             replace=False)]
  reference = detection.reference_from_probs(victim_local(ref_x))
  sources = {'random': p.query_splits}
  if 'knockoff' in cfg.attacks:
    sources['knockoff'] = stealing.query_source(
        dataclasses.replace(base, query_data=cfg.knockoff_data), p.dataset,
        p.splits, p.wd, p.steps, 'matrix')
  tag = hashlib.sha256(json.dumps(dataclasses.asdict(cfg), sort_keys=True)
                       .encode()).hexdigest()[:12]
  out_dir = os.path.join(p.wd, 'matrix', f'{p.victim.name}-b{cfg.budget}-'
                         f'{tag}')
  os.makedirs(out_dir, exist_ok=True)
  state_path = os.path.join(out_dir, 'cells.json')
  cells = []
  if os.path.exists(state_path):
    with open(state_path) as f:
      cells = json.load(f)
  done = {(c['defense'], c['attack']) for c in cells}
  key_path = os.path.join(out_dir, 'watermark.key')
  if not os.path.exists(key_path):
    atomic_write(key_path, lambda t: _write_bytes(t, os.urandom(32)))
  with open(key_path, 'rb') as f:
    wm_key = f.read()
  honest_x = x_test[:cfg.honest_images]
  for column in cfg.defenses:
    todo = [a for a in cfg.attacks if (column, a) not in done]
    if not todo:
      continue
    secrets_ = {n: access.new_key() for n in ['honest'] + todo}
    clients = [access.Client(n, access.hash_key(k))
               for n, k in secrets_.items()]
    log_dir = os.path.join(out_dir, 'logs', column.replace(':', '_'))
    if os.path.isdir(log_dir):  # an interrupted column starts over
      for f in os.listdir(log_dir):
        os.remove(os.path.join(log_dir, f))
    servable = serving.load_servable(
        p.victim.ref.location, 'victim',
        defense=column if column not in OWNER_COLUMNS else 'none',
        seed=cfg.seed)
    g = _column_guard(cfg, column, clients, log_dir, reference, wm_key)
    ms = serving.ModelServer([servable], guard=g)
    with serving.BackgroundServer(ms.make_app()) as bg:
      url = bg.url + '/v1/models/victim'
      answers, _ = _ask(url, secrets_['honest'], honest_x)
      honest_acc = float((answers == y_test[:len(answers)]).mean())
      progress(f'[matrix] {column}: honest client accuracy '
               f'{100 * honest_acc:.2f}%')
      for attack in todo:
        t0 = time.time()
        os.environ[API_KEY_ENV] = secrets_[attack]
        ref = victim_ref_from_url(url)
        # One answer cache per cell: the same URL serves other defences
        # in other columns.
        ref['fingerprint'] = hashlib.sha256(
            f'matrix|{tag}|{column}|{attack}'.encode()).hexdigest()
        try:
          labeled = _attack(p, base, cfg, sources, attack, ref, arch, budget)
          blocked = False
        except Exception as e:  # pylint: disable=broad-except
          if '403' not in str(e):
            raise
          labeled, blocked = None, True
        finally:
          os.environ.pop(API_KEY_ENV, None)
        st = g.states[attack]
        cell = {'defense': column, 'attack': attack, 'budget': budget,
                'student': arch, 'honest_accuracy': honest_acc,
                'honest_flagged': list(g.states['honest'].flagged),
                'queries_answered': st.queries, 'blocked': blocked,
                **{f'{d.name}_flagged_at': st.detected_at.get(d.name)
                   for d in st.detectors}}
        if blocked:
          cell.update(accuracy=None, fidelity=None, p_value=None)
        else:
          sres = stealing.train_student(p, base, labeled, arch, budget)
          # Scored by train_student against the local, undefended victim.
          cell.update(accuracy=sres.metrics['accuracy'],
                      fidelity=sres.metrics['fidelity'],
                      saved_model=sres.saved_model)
          cell['p_value'] = None
          if column == 'watermark':
            wm = watermark.Watermark(wm_key, cfg.watermark_rate)
            xq, outs = querylog.replay(querylog.log_path(log_dir, attack))
            ans = outs['probabilities'].argmax(1)
            k = outs['probabilities'].shape[1]
            marked, honest = wm.honest(xq, ans, k)
            v = watermark.verify(load_predictor(sres.saved_model)(
                xq[marked]).argmax(1), ans[marked], honest[marked], k)
            cell.update(p_value=v.p_value, watermark_marked=v.marked,
                        watermark_departures=v.departures,
                        watermark_agreements=v.agreements)
        cell['seconds'] = round(time.time() - t0, 1)
        cells.append(cell)
        atomic_write(state_path, lambda t: _write_bytes(
            t, json.dumps(cells, indent=1).encode()))
        progress(f'[matrix] {column} x {attack}: ' + json.dumps(
            {k: (round(v, 4) if isinstance(v, float) else v)
             for k, v in cell.items() if k != 'saved_model'}))
  df = pd.DataFrame(cells)
  df.to_csv(os.path.join(out_dir, 'cells.csv'), index=False)
  plot = _heatmap(df, cfg, os.path.join(out_dir, 'fidelity.png'))
  return {'cells': cells, 'dir': out_dir, 'plot': plot,
          'seconds': round(time.time() - started, 1)}


def _attack(p, base, cfg, sources, attack, ref, arch, budget):
  """The attack's answered queries (an Examples artifact), all asked
  through `ref`: one random draw, or margin's rounds (each chosen by a
  student of the answers so far, trained without a SavedModel)."""
  from modelsteal.artifacts import Model  # pylint: disable=g-import-not-at-top
  from modelsteal.attacks import label_queries  # pylint: disable=g-import-not-at-top
  from modelsteal.attacks.active import label_round, round_sizes  # pylint: disable=g-import-not-at-top
  from modelsteal.experiments import stealing  # pylint: disable=g-import-not-at-top
  if attack != 'margin':
    return label_queries.run(p.wd, splits=sources[attack], victim=ref,
                             output='probs', budget=budget,
                             strategy='random', seed=cfg.seed)['labeled']
  sizes = round_sizes(budget, cfg.active_rounds)
  labeled = label_queries.run(p.wd, splits=sources['random'], victim=ref,
                              output='probs', budget=sizes[0],
                              strategy='random', seed=cfg.seed)['labeled']
  for r in range(1, len(sizes)):
    student = stealing.train_student(p, base, labeled, arch, sizes[r - 1],
                                     serving=False)
    labeled = label_round.run(
        p.wd, splits=sources['random'], previous=labeled,
        student=Model.load(student.model_dir), victim=ref, output='probs',
        n=sizes[r] - sizes[r - 1], strategy='margin', seed=cfg.seed,
        round_index=r)['labeled']
  return labeled


def _write_bytes(path: str, data: bytes) -> None:
  with open(path, 'wb') as f:
    f.write(data)


def _heatmap(df, cfg, path) -> str | None:
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  cols = [d for d in cfg.defenses if d in set(df['defense'])]
  rows = [a for a in cfg.attacks if a in set(df['attack'])]
  grid = np.full((len(rows), len(cols)), np.nan)
  for r in df.to_dict('records'):
    if r['defense'] in cols and r['attack'] in rows and r.get('fidelity') \
        is not None and not (isinstance(r['fidelity'], float)
                             and np.isnan(r['fidelity'])):
      grid[rows.index(r['attack']), cols.index(r['defense'])] = r['fidelity']
  fig, ax = plt.subplots(figsize=(1.2 * len(cols) + 2, 0.8 * len(rows) + 1.5))
  im = ax.imshow(grid * 100, vmin=0, vmax=100, cmap='viridis')
  ax.set_xticks(range(len(cols)), cols, rotation=30, ha='right')
  ax.set_yticks(range(len(rows)), rows)
  for i in range(len(rows)):
    for j in range(len(cols)):
      blocked = np.isnan(grid[i, j])
      ax.text(j, i, 'blocked' if blocked else f'{100 * grid[i, j]:.1f}',
              ha='center', va='center', color='k' if blocked else 'w',
              fontsize=8)
  ax.set_title(f'stolen fidelity (%), {df["budget"].max():,} queries')
  fig.colorbar(im, ax=ax)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
  return path
