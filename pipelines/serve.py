r"""Serve a SavedModel with TensorFlow Serving's REST and gRPC APIs.

    python -m pipelines.serve --model_dir=PATH [--model_name=NAME] [--port=8501]
        [--grpc_port=8500]

Serves every numbered version under `--model_dir` (a TF Serving model base
directory, a SavedModel directory, or a modelsteal Model artifact: victims
and stolen students alike); requests without a version get the highest.
Listens on 127.0.0.1 unless `--host` says otherwise, prints the model URL,
and runs until Ctrl-C. Requests/s and images/s on the project's 2-core
CPU: BUILD_NOTES.md, "Serving".

    curl http://127.0.0.1:8501/v1/models/NAME
    curl http://127.0.0.1:8501/v1/models/NAME/metadata
    curl -d '{"instances": [[[[0.0], ...]]]}' \
        http://127.0.0.1:8501/v1/models/NAME:predict
    curl -d '{"inputs": ...}' http://127.0.0.1:8501/v1/models/NAME/versions/1:predict

gRPC (`tensorflow.serving.PredictionService`: Predict, GetModelMetadata,
Classify; `ModelService.GetModelStatus`) on --grpc_port answers the same
models through the same defence and batching queue; a stock
`tensorflow_serving.apis` client works unchanged (`modelsteal.serving.grpc_api`
has one). Throughput of both: BUILD_NOTES.md, "Serving".

Variants:

    --output_defense=label | topk:3 | rounded:2 | cutoff:0.5 | noise:0.05 |
                     reverse_sigmoid:1,0.1   answer through an output defence
    --nobatching                        one model call per request
    --batch_max_size=256 --batch_timeout_ms=5   batching window
    --max_body_bytes=33554432           larger bodies get 413
    --port=0 --grpc_port=0              any free ports (printed)
    --grpc_port=-1                      REST only

The owner's side (off by default; BUILD_NOTES.md, "Owner's side"):

    --api_keys=keys.json        every request needs a key (Authorization:
                                Bearer KEY, or x-api-key: KEY); per-client
                                quota and rate from the file, which
                                `python -m pipelines.keys` writes
    --query_log=DIR             one append-only DIR/CLIENT.jsonl per client:
                                every query, answer and decision
    --detect=prada,shift --detect_reference=mnist
                                flag thieves (PRADA; output-distribution
                                shift against the owner's data)
    --on_detect=flag | block | label | noise:0.3
                                what a flagged client gets from then on
    --watermark_key=wm.key --watermark_rate=0.005
                                answer a keyed fraction of queries with a
                                keyed wrong label; `python -m
                                pipelines.verify` claims a stolen copy

Steal it: `python -m pipelines.steal --victim_url=http://127.0.0.1:8501/v1/
models/NAME --dataset=mnist`, or over gRPC with `--victim_grpc=127.0.0.1:8500/NAME`.
"""

from __future__ import annotations

import dataclasses
import gc
import os
import sys

from absl import app
from absl import flags

from pipelines import _owner_flags
from pipelines import common

_MODEL_DIR = flags.DEFINE_string(
    'model_dir', None, 'Model base directory (numbered SavedModel versions), '
    'a SavedModel, or a modelsteal Model artifact.')
_MODEL_NAME = flags.DEFINE_string('model_name', None, 'Name in URLs, '
                                  '/v1/models/NAME; default: "model".')
_HOST = flags.DEFINE_string('host', '127.0.0.1', 'Interface to listen on '
                            '(0.0.0.0 exposes the server to the network).')
_PORT = flags.DEFINE_integer('port', 8501, 'REST port (0: any free port).')
_GRPC_PORT = flags.DEFINE_integer(
    'grpc_port', 8500, 'gRPC port of TF Serving\'s PredictionService and '
    'ModelService (0: any free port; -1: no gRPC).')
# Named apart from pipelines.defend's --defense (training defences against
# poisoned data): the specs here are those of pipelines.steal's --output.
_DEFENSE = flags.DEFINE_string(
    'output_defense', 'none', 'Output defence applied to the probabilities: '
    'none, label, topk:K, rounded:D, cutoff:T, noise:S, reverse_sigmoid:B,G, '
    'misinfo:TAU[,NU] (Adaptive Misinformation), mad:EPS[,argmax] (MAD, '
    'Prediction Poisoning).')
_MAX_BODY = flags.DEFINE_integer('max_body_bytes', 32 << 20,
                                 'Largest request body accepted (bytes).')
_BATCHING = flags.DEFINE_bool('batching', True, 'Batch concurrent requests '
                              'into one model call.')
_BATCH_MAX = flags.DEFINE_integer('batch_max_size', 256,
                                  'Instances per batched model call at most.')
_BATCH_TIMEOUT = flags.DEFINE_float(
    'batch_timeout_ms', 5.0, 'How long an open batch waits for more '
    'requests (milliseconds).')
_API_KEYS = flags.DEFINE_string(
    'api_keys', None, 'JSON key file (clients, key SHA-256s, quotas, rates; '
    'python -m pipelines.keys writes it): every request then needs a key.')
_QUERY_LOG_FSYNC = flags.DEFINE_bool(
    'query_log_fsync', True, 'fsync the query log before each answer (off: '
    'a killed server still loses nothing, a power cut may).')
_DETECT_REFERENCE = flags.DEFINE_string(
    'detect_reference', None, "The owner's data for --detect=shift: a "
    'dataset name or .npz (its training images).')
_DETECT_REFERENCE_SIZE = flags.DEFINE_integer(
    'detect_reference_size', 2000, 'Reference images drawn for --detect.')
_ON_DETECT = flags.DEFINE_string(
    'on_detect', 'flag', 'A flagged client: flag (log only), block (403), or '
    'an output defence spec answered to it (label, noise:0.3, ...).')
_VERSIONS = flags.DEFINE_enum('versions', 'all', ['all', 'latest'],
                              'Load every numbered version, or the latest.')


@dataclasses.dataclass(frozen=True)
class ServeConfig:
  model_dir: str
  model_name: str = 'model'
  host: str = '127.0.0.1'
  port: int = 8501
  grpc_port: int = 8500  # -1: no gRPC
  defense: str = 'none'
  max_body_bytes: int = 32 << 20
  batching: bool = True
  batch_max_size: int = 256
  batch_timeout_ms: float = 5.0
  versions: str = 'all'
  seed: int = 0
  api_keys: str | None = None
  query_log: str | None = None
  query_log_fsync: bool = True
  detect: str = ''
  detect_reference: str | None = None
  detect_reference_size: int = 2000
  on_detect: str = 'flag'
  watermark_key: str | None = None
  watermark_rate: float = 0.005


def build_server(cfg: ServeConfig):
  """Loads the model and returns the `ModelServer` (not yet listening)."""
  from modelsteal import serving  # pylint: disable=g-import-not-at-top
  from modelsteal.errors import ConfigError  # pylint: disable=g-import-not-at-top
  if not cfg.model_dir:
    raise ConfigError('model_dir', 'is required: the SavedModel (or folder of '
                      'numbered versions) to serve.')
  if not 0 <= cfg.port < 65536:
    raise ConfigError('port', f'must be in 0..65535, got {cfg.port}.')
  if not -1 <= cfg.grpc_port < 65536:
    raise ConfigError('grpc_port', 'must be in 0..65535, or -1 for no gRPC, '
                      f'got {cfg.grpc_port}.')
  if cfg.grpc_port == cfg.port and cfg.port:
    raise ConfigError('grpc_port', f'and {{port}} are both {cfg.port}; REST '
                      'and gRPC need a port each.')
  if cfg.batch_max_size < 1 or cfg.batch_timeout_ms < 0:
    raise ConfigError('batch_max_size', 'must be >= 1 and '
                      '{batch_timeout_ms} >= 0.')
  servable = serving.load_servable(
      os.path.abspath(cfg.model_dir), cfg.model_name, defense=cfg.defense,
      seed=cfg.seed, versions=cfg.versions)
  return serving.ModelServer(
      [servable], batching=cfg.batching, max_batch_size=cfg.batch_max_size,
      batch_timeout_s=cfg.batch_timeout_ms / 1000.0,
      max_body_bytes=cfg.max_body_bytes, guard=build_guard(cfg, servable))


def build_guard(cfg: ServeConfig, servable):
  """Keys, log and detectors from the config; None when all are off."""
  from modelsteal.defenses import detection  # pylint: disable=g-import-not-at-top
  from modelsteal.errors import ConfigError  # pylint: disable=g-import-not-at-top
  from modelsteal.serving import access  # pylint: disable=g-import-not-at-top
  from modelsteal.serving import guard  # pylint: disable=g-import-not-at-top
  clients = (tuple(access.load_clients(cfg.api_keys)) if cfg.api_keys
             else None)
  reference = None
  names = [p.split(':')[0].strip() for p in cfg.detect.split(',')]
  if 'shift' in names and cfg.detect_reference:
    if cfg.detect_reference_size < 10:
      raise ConfigError('detect_reference_size', 'must be at least 10, got '
                        f'{cfg.detect_reference_size}.')
    from modelsteal import data  # pylint: disable=g-import-not-at-top
    import numpy as np  # pylint: disable=g-import-not-at-top
    ds = data.load_dataset(cfg.detect_reference)
    rng = np.random.default_rng(cfg.seed)
    idx = rng.choice(len(ds.x_train), min(cfg.detect_reference_size,
                                          len(ds.x_train)), replace=False)
    reference = detection.reference_from_probs(
        guard.reference_probs(servable, ds.x_train[np.sort(idx)]))
  elif cfg.detect_reference and 'shift' not in names:
    raise ConfigError('detect_reference', 'is used by {detect}=shift only.')
  detectors = tuple(detection.parse_detectors(cfg.detect, reference))
  if cfg.on_detect != 'flag' and not detectors:
    raise ConfigError('on_detect', 'needs {detect}: no detector is on.')
  wm = None
  if cfg.watermark_key:
    from modelsteal.defenses import watermark  # pylint: disable=g-import-not-at-top
    if not cfg.query_log:
      raise ConfigError('watermark_key', 'needs {query_log}: the log holds '
                        'the queries a stolen copy is verified on.')
    wm = watermark.Watermark(watermark.load_key(cfg.watermark_key),
                             cfg.watermark_rate)
  g = guard.Guard(guard.GuardConfig(
      clients=clients, log_dir=cfg.query_log, fsync=cfg.query_log_fsync,
      detectors=detectors, on_detect=cfg.on_detect, watermark=wm),
      seed=cfg.seed)
  return g if g.active else None


def run(cfg: ServeConfig) -> None:
  """Serves until SIGINT/SIGTERM."""
  from modelsteal import serving  # pylint: disable=g-import-not-at-top
  server = build_server(cfg)
  servable = server.models[cfg.model_name]
  # TF leaves a large graph of Python objects behind after loading; freezing
  # it keeps the collector's full passes, frequent under the many lists a
  # JSON request creates, from walking it again and again.
  gc.collect()
  gc.freeze()

  grpc_port = None if cfg.grpc_port < 0 else cfg.grpc_port
  app = server.make_app(grpc_port=grpc_port, grpc_host=cfg.host)

  def ready(port):
    base = f'http://{cfg.host}:{port}/v1/models/{cfg.model_name}'
    print(f'[serve] model {cfg.model_name!r} versions '
          f'{sorted(servable.versions)} from {cfg.model_dir}; defence '
          f'{cfg.defense}; batching '
          + (f'on (<= {cfg.batch_max_size} instances, '
             f'{cfg.batch_timeout_ms:g} ms)' if cfg.batching else 'off'),
          flush=True)
    print(f'[serve] listening: {base}  (predict: POST {base}:predict; '
          'Ctrl-C stops)', flush=True)
    if server.guard is not None:
      g = server.guard.cfg
      print('[serve] owner: keys '
            + (f'required ({len(g.clients)} clients, {cfg.api_keys})'
               if g.clients is not None else 'off')
            + f'; query log {g.log_dir or "off"}; detect '
            f'{cfg.detect or "off"} (on detection: {g.on_detect}); '
            + (f'watermark {cfg.watermark_rate:g} of queries'
               if g.watermark is not None else 'no watermark'),
            flush=True)
    if server.grpc is not None:
      print(f'[serve] grpc: {server.grpc.address}  (PredictionService, '
            f'ModelService; model_spec.name={cfg.model_name!r})', flush=True)

  serving.serve_forever(app, cfg.host, cfg.port, on_ready=ready)
  print('[serve] stopped.', flush=True)


def config_from_flags() -> ServeConfig:
  return ServeConfig(
      model_dir=_MODEL_DIR.value, model_name=_MODEL_NAME.value or 'model',
      host=_HOST.value, port=_PORT.value, grpc_port=_GRPC_PORT.value,
      defense=_DEFENSE.value,
      max_body_bytes=_MAX_BODY.value, batching=_BATCHING.value,
      batch_max_size=_BATCH_MAX.value, batch_timeout_ms=_BATCH_TIMEOUT.value,
      versions=_VERSIONS.value, seed=common.SEED.value,
      api_keys=_API_KEYS.value, query_log=_owner_flags.QUERY_LOG.value,
      query_log_fsync=_QUERY_LOG_FSYNC.value, detect=_owner_flags.DETECT.value,
      detect_reference=_DETECT_REFERENCE.value,
      detect_reference_size=_DETECT_REFERENCE_SIZE.value,
      on_detect=_ON_DETECT.value,
      watermark_key=_owner_flags.WATERMARK_KEY.value,
      watermark_rate=_owner_flags.WATERMARK_RATE.value)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')

  def body():
    from modelsteal.serving import ServableLoadError  # pylint: disable=g-import-not-at-top
    try:
      run(config_from_flags())
    except (ServableLoadError, OSError) as e:
      print(f'serve: error: {e}', file=sys.stderr)
      sys.exit(2)

  common.run_main(body, 'serve')


if __name__ == '__main__':
  app.run(main)
