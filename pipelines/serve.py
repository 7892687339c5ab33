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
    'none, label, topk:K, rounded:D, cutoff:T, noise:S, reverse_sigmoid:B,G.')
_MAX_BODY = flags.DEFINE_integer('max_body_bytes', 32 << 20,
                                 'Largest request body accepted (bytes).')
_BATCHING = flags.DEFINE_bool('batching', True, 'Batch concurrent requests '
                              'into one model call.')
_BATCH_MAX = flags.DEFINE_integer('batch_max_size', 256,
                                  'Instances per batched model call at most.')
_BATCH_TIMEOUT = flags.DEFINE_float(
    'batch_timeout_ms', 5.0, 'How long an open batch waits for more '
    'requests (milliseconds).')
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
      max_body_bytes=cfg.max_body_bytes)


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
      versions=_VERSIONS.value, seed=common.SEED.value)


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
