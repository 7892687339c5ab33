r"""Is a suspect model a stolen copy of yours? The watermark test.

    python -m pipelines.verify --suspect=PATH_OR_URL --watermark_key=wm.key \
        --query_log=querylog [--client=NAME] [--alpha=1e-6] [--out=verdict.json]

The server (`pipelines.serve --watermark_key=wm.key --query_log=querylog`)
answered a keyed fraction of every client's queries with a keyed wrong
label. For each client in the log (or `--client`), this replays that
client's watermarked queries to the suspect and counts how often it gives
the watermark's label where it departs from the honest answer; by chance a
departure lands there once in K-1. It prints, per client, the counts and the
one-sided binomial p-value, and claims
the suspect (exit status 0) when a client's p-value is below `--alpha`
divided by the number of clients tested; otherwise exit status 1.

`--suspect`: a SavedModel directory, a `.keras` file (opened in Keras' safe
mode: a suspect is someone else's model, and a Lambda layer could run code
on load), or a served model URL (http://HOST:PORT/v1/models/NAME; set
MODELSTEAL_API_KEY if it wants a key). A SavedModel is a program
(TensorFlow's security guidance): verify an untrusted one over its URL.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys

from absl import app
from absl import flags

from pipelines import _owner_flags
from pipelines import common

_SUSPECT = flags.DEFINE_string(
    'suspect', None, 'SavedModel dir, .keras file (safe mode) or served '
    'model URL.')
_CLIENT = flags.DEFINE_string('client', None, 'Test only this client\'s '
                              'queries (default: every client in the log).')
_ALPHA = flags.DEFINE_float('alpha', 1e-6, 'Claim when p < alpha / clients.')
_OUT = flags.DEFINE_string('out', None, 'Write the verdict as JSON here.')


@dataclasses.dataclass(frozen=True)
class VerifyConfig:
  suspect: str
  watermark_key: str
  query_log: str
  watermark_rate: float = 0.005
  client: str | None = None
  alpha: float = 1e-6


def _suspect_predict(suspect: str):
  """x -> predicted labels, without trusting the suspect's code."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  if suspect.startswith(('http://', 'https://')):
    from modelsteal.oracle.rest import RestOracle  # pylint: disable=g-import-not-at-top
    oracle = RestOracle(suspect, output='probs')
    return lambda x: oracle.query_all(x).argmax(1)
  from modelsteal.export import load_predictor  # pylint: disable=g-import-not-at-top
  predictor = load_predictor(suspect)  # safe mode for .keras
  return lambda x: np.asarray(predictor(x)).argmax(1)


def run(cfg: VerifyConfig) -> dict:
  """Tests the suspect against each client's watermarked queries."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from modelsteal.defenses import watermark  # pylint: disable=g-import-not-at-top
  from modelsteal.errors import ConfigError  # pylint: disable=g-import-not-at-top
  from modelsteal.serving import querylog  # pylint: disable=g-import-not-at-top
  for field in ('suspect', 'watermark_key', 'query_log'):
    if not getattr(cfg, field):
      raise ConfigError(field, 'is required.')
  if not os.path.isdir(cfg.query_log):
    raise ConfigError('query_log', f': no such folder {cfg.query_log!r}.')
  wm = watermark.Watermark(watermark.load_key(cfg.watermark_key),
                           cfg.watermark_rate)
  names = sorted(f[:-len('.jsonl')] for f in os.listdir(cfg.query_log)
                 if f.endswith('.jsonl'))
  if cfg.client:
    if cfg.client not in names:
      raise ConfigError('client', f': no log of {cfg.client!r} in '
                        f'{cfg.query_log} (clients: {names}).')
    names = [cfg.client]
  predict = _suspect_predict(cfg.suspect)
  rows = []
  for name in names:
    x, outs = querylog.replay(querylog.log_path(cfg.query_log, name))
    if not len(x):
      continue
    answered = (outs['probabilities'].argmax(1) if 'probabilities' in outs
                else np.asarray(outs['label']).reshape(-1))
    k = (outs['probabilities'].shape[1] if 'probabilities' in outs else
         int(answered.max()) + 1)
    # Which queries were marked depends on the query alone; their label is
    # what the server answered.
    marked, honest = wm.honest(x, answered, max(k, 2))
    if not marked.any():
      rows.append({'client': name, 'queries': len(x), 'marked': 0,
                   'departures': 0, 'agreements': 0, 'p_value': 1.0})
      continue
    verdict = watermark.verify(predict(x[marked]), answered[marked],
                               honest[marked], k)
    rows.append({'client': name, 'queries': len(x), 'marked': verdict.marked,
                 'departures': verdict.departures,
                 'agreements': verdict.agreements,
                 'p_value': verdict.p_value, 'test': verdict.test})
  tested = max(1, len(rows))
  threshold = cfg.alpha / tested
  claimed = [r['client'] for r in rows if r['p_value'] < threshold]
  return {'suspect': cfg.suspect, 'alpha': cfg.alpha, 'threshold': threshold,
          'claimed': bool(claimed), 'clients_claimed': claimed, 'rows': rows}


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')

  def body():
    result = run(VerifyConfig(
        suspect=_SUSPECT.value,
        watermark_key=_owner_flags.WATERMARK_KEY.value,
        query_log=_owner_flags.QUERY_LOG.value,
        watermark_rate=_owner_flags.WATERMARK_RATE.value,
        client=_CLIENT.value, alpha=_ALPHA.value))
    for r in result['rows']:
      print(f'[verify] client {r["client"]}: {r["marked"]} watermarked '
            f'queries (of {r["queries"]}); the suspect departs from the '
            f'honest answer on {r["departures"]}, to the watermark label on '
            f'{r["agreements"]}; p = {r["p_value"]:.3g}'
            + (f' ({r["test"]})' if 'test' in r else ''))
    if result['claimed']:
      print(f'[verify] CLAIMED: {result["suspect"]} carries the watermark of '
            f'{", ".join(result["clients_claimed"])} (p < '
            f'{result["threshold"]:.3g}).')
    else:
      print(f'[verify] not claimed: no client\'s p-value is below '
            f'{result["threshold"]:.3g}.')
    if _OUT.value:
      from modelsteal.files import atomic_write  # pylint: disable=g-import-not-at-top

      def write(tmp):
        with open(tmp, 'w') as f:
          json.dump(result, f, indent=1)

      atomic_write(_OUT.value, write)
    sys.exit(0 if result['claimed'] else 1)

  common.run_main(body, 'verify')


if __name__ == '__main__':
  app.run(main)
