"""A `tf.distribute` strategy from a name: `default`, `mirrored`,
`multiworker`, `tpu`.

`mirrored` uses every local GPU (or, with none, every logical CPU device);
`multiworker` is `tf.distribute.MultiWorkerMirroredStrategy` over the
machines listed in the `TF_CONFIG` environment variable (every machine runs
the same command; see README, "Several machines"); `tpu` connects to a
Colab / Cloud TPU (`TPUClusterResolver`), or to the one named by
`tpu_address`.

Under `multiworker` only the chief (task `chief`, or `worker` 0 where the
cluster has no `chief`) writes artifacts and execution records: the other
workers run every step too (they hold a replica each) but write under a
private temporary directory (`worker_workdir`), as TensorFlow's multi-worker
guide asks. Which cached steps are reused is agreed between the workers
(`all_agree`) so that they never disagree about which steps train.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import tempfile

from modelsteal.errors import literal
from modelsteal.errors import UnknownNameError
from modelsteal.errors import UserError

STRATEGIES = ('default', 'mirrored', 'multiworker', 'tpu')

_TF_CONFIG_EXAMPLE = (
    'TF_CONFIG=\'{"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
    '"task": {"type": "worker", "index": 0}}\' (index 1 on the second '
    'machine; README, "Several machines")')


class DistributeError(UserError, ValueError):
  """A strategy that cannot be set up: no TPU, a bad `TF_CONFIG`, ..."""


class WorkerLostError(DistributeError):
  """A worker of a multi-worker cluster stopped answering mid-run."""


@dataclasses.dataclass(frozen=True)
class Task:
  """This process's place in a multi-worker cluster."""
  type: str = 'worker'
  index: int = 0
  num_workers: int = 1
  has_chief_job: bool = False

  @property
  def is_chief(self) -> bool:
    if self.has_chief_job:
      return self.type == 'chief'
    return self.type == 'worker' and self.index == 0


def parse_tf_config(raw: str | None) -> Task:
  """Checks a `TF_CONFIG` value and returns this process's `Task`.

  Raises:
    DistributeError: unset, not JSON, or not a cluster of `chief` / `worker`
      jobs with this task in it; the message shows a valid example.
  """
  def bad(why):
    return DistributeError(f'{{distribute}}=multiworker: {why}. Set TF_CONFIG '
                           f'on every machine, e.g. {_TF_CONFIG_EXAMPLE}.')

  if not raw or not raw.strip():
    raise bad('the TF_CONFIG environment variable is not set (it lists the '
              "cluster's workers and this machine's place in it)")
  try:
    cfg = json.loads(raw)
  except ValueError as e:
    raise bad(f'TF_CONFIG is not valid JSON ({e})') from e
  if not isinstance(cfg, dict) or not isinstance(cfg.get('cluster'), dict):
    raise bad('TF_CONFIG has no "cluster" object')
  cluster = cfg['cluster']
  other = sorted(set(cluster) - {'chief', 'worker'})
  if other:
    raise bad(f'TF_CONFIG\'s cluster has job(s) {other}; MultiWorkerMirrored'
              'Strategy takes only "worker" (and at most one "chief")')
  for job, addrs in cluster.items():
    if (not isinstance(addrs, list) or not addrs or
        not all(isinstance(a, str) and a.rpartition(':')[2].isdigit()
                for a in addrs)):
      raise bad(f'TF_CONFIG\'s cluster["{job}"] must be a non-empty list of '
                f'"host:port" strings, got {addrs!r}')
  if len(cluster.get('chief', [])) > 1:
    raise bad('TF_CONFIG\'s cluster has more than one "chief"')
  if 'worker' not in cluster and 'chief' not in cluster:
    raise bad('TF_CONFIG\'s cluster lists no "worker"')
  task = cfg.get('task')
  if not isinstance(task, dict) or 'type' not in task:
    raise bad('TF_CONFIG has no "task" ({"type": "worker", "index": N}: '
              'which of the cluster\'s workers this machine is)')
  ttype, index = task['type'], task.get('index', 0)
  if ttype not in cluster:
    raise bad(f'TF_CONFIG\'s task type {ttype!r} is not a job of the cluster '
              f'({sorted(cluster)})')
  if not isinstance(index, int) or not 0 <= index < len(cluster[ttype]):
    raise bad(f'TF_CONFIG\'s task index {index!r} is out of range: the '
              f'cluster has {len(cluster[ttype])} {ttype}(s), indices from 0')
  return Task(ttype, index, sum(len(v) for v in cluster.values()),
              'chief' in cluster)


def get_strategy(name: str = 'default', tpu_address: str | None = None):
  """Returns a `tf.distribute.Strategy`.

  Raises:
    ValueError: unknown name (lists the valid ones).
    DistributeError: no TPU reachable, a bad `TF_CONFIG`, or `multiworker`
      asked for after TensorFlow started running.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  if name == 'default':
    return tf.distribute.get_strategy()
  if name == 'mirrored':
    gpus = tf.config.list_logical_devices('GPU')
    devices = [d.name for d in (gpus or tf.config.list_logical_devices('CPU'))]
    return tf.distribute.MirroredStrategy(devices=devices)
  if name == 'multiworker':
    parse_tf_config(os.environ.get('TF_CONFIG'))
    _patch_keras_for_multiworker()
    _set_cluster_timeouts()
    try:
      return tf.distribute.MultiWorkerMirroredStrategy()
    except (RuntimeError, ValueError) as e:
      if 'Timeout waiting for the cluster' in str(e):
        raise DistributeError(
            '{distribute}=multiworker: the other workers did not all come up '
            f'within {_env_seconds("MODELSTEAL_CLUSTER_WAIT_S", 600)} s. '
            'Start the same command on every machine TF_CONFIG lists (each '
            'with its own task index) and check that their host:port '
            'addresses are reachable from each other.') from e
      raise DistributeError(
          f'{{distribute}}=multiworker could not start ({literal(e)}). The '
          'strategy '
          'must be created before TensorFlow runs anything in the process: '
          'pass it on the command line (or call modelsteal.distribute.use '
          'first thing in a notebook, after a kernel restart).') from e
  if name == 'tpu':
    if tpu_address:
      _check_reachable(tpu_address)
    tried = []
    # Older TPU nodes answer to '' (COLAB_TPU_ADDR, TPU_NAME); TPU VMs (Colab's
    # current TPU runtime) to 'local', tried only where TPU chips are attached.
    import glob  # pylint: disable=g-import-not-at-top
    tpu_vm = bool(glob.glob('/dev/accel*') or glob.glob('/dev/vfio/[0-9]*'))
    for address in ([tpu_address] if tpu_address else
                    [''] + (['local'] if tpu_vm else [])):
      try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(
            tpu=address)
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return tf.distribute.TPUStrategy(resolver)
      except (ValueError, RuntimeError, tf.errors.OpError) as e:
        tried.append(f'{address or "auto"}: {str(e).splitlines()[0][:160]}')
    raise DistributeError(
        f'{{distribute}}=tpu: no TPU found ({literal("; ".join(tried))}). On '
        'Colab pick '
        'a TPU runtime (Runtime > Change runtime type); elsewhere pass its '
        'address.')
  raise UnknownNameError('distribute', ': unknown distribution strategy '
                         f'{literal(repr(name))}; valid: '
                         f'{", ".join(STRATEGIES)}.')


def _check_reachable(address: str, timeout_s: float = 10.0) -> None:
  """Fails fast on a TPU address nobody listens at (TensorFlow itself
  waits for it without end)."""
  import socket  # pylint: disable=g-import-not-at-top
  hostport = address.split('://', 1)[-1].rstrip('/')
  host, _, port = hostport.rpartition(':')
  if not host or not port.isdigit():
    return  # a TPU name, not an address: the resolver looks it up
  try:
    socket.create_connection((host, int(port)), timeout=timeout_s).close()
  except OSError as e:
    raise DistributeError(
        f'{{distribute}}=tpu: the TPU at {literal(address)} is unreachable '
        f'({literal(e)}). Check '
        'the address and that the TPU is running; on Colab pass no address '
        'and pick a TPU runtime.') from e


_CURRENT = None
_CURRENT_KEY = None
_TASK = Task()


def use(name: str = 'default', tpu_address: str | None = None):
  """Sets the strategy that training components use, and returns it.

  Kept out of component fingerprints on purpose: where a model was trained
  does not change what it is, so a victim trained on a TPU is reused on a CPU.
  Calling it again with the same name returns the same strategy (a TPU is
  initialised once; TensorFlow cannot start a second cluster in a process).
  """
  global _CURRENT, _CURRENT_KEY, _TASK
  if _CURRENT is not None and _CURRENT_KEY == (name, tpu_address):
    return _CURRENT  # a TPU is initialised, a cluster started, only once
  if is_multiworker():
    raise DistributeError(f'{{distribute}}={name}: this process already runs '
                          'in a multi-worker cluster; start a new process.')
  strategy = get_strategy(name, tpu_address)
  _TASK = (parse_tf_config(os.environ.get('TF_CONFIG'))
           if name == 'multiworker' else Task())
  _CURRENT, _CURRENT_KEY = strategy, (name, tpu_address)
  return _CURRENT


def current():
  """The strategy set by `use`, or TF's default strategy."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  return _CURRENT or tf.distribute.get_strategy()


def task() -> Task:
  """This process's task (a single-process run is the chief of one)."""
  return _TASK


def is_multiworker() -> bool:
  return _CURRENT is not None and type(_CURRENT).__name__ in (
      'MultiWorkerMirroredStrategy', 'CollectiveAllReduceStrategy')


def is_chief() -> bool:
  """True unless this process is a non-chief worker of a cluster."""
  return _TASK.is_chief


def worker_workdir(workdir: str) -> str:
  """Where this process writes: `workdir` on the chief; on another worker a
  private directory under the system's temporary directory (kept between
  runs as that worker's cache; safe to delete)."""
  if is_chief():
    return workdir
  root = os.path.join(tempfile.gettempdir(),
                      f'modelsteal-{_TASK.type}-{_TASK.index}')
  if os.path.abspath(workdir).startswith(root + os.sep):
    return workdir
  digest = hashlib.sha256(os.path.abspath(workdir).encode()).hexdigest()[:12]
  return os.path.join(root, digest)


def all_agree(flag: bool) -> bool:
  """True where every worker of the cluster says True (one all-reduce);
  `flag` itself outside a multi-worker run."""
  if not is_multiworker():
    return flag
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  s = _CURRENT
  votes = s.experimental_distribute_values_from_function(
      lambda _: tf.constant(1.0 if flag else 0.0))
  try:
    total = s.reduce(tf.distribute.ReduceOp.SUM, votes, axis=None)
  except (tf.errors.UnavailableError, tf.errors.DeadlineExceededError,
          tf.errors.CancelledError, tf.errors.AbortedError,
          tf.errors.InternalError) as e:
    raise lost_worker_error(e) from e
  return float(total) > s.num_replicas_in_sync - 0.5


def global_batch_size(batch_size: int, strategy) -> int:
  """The recipe's batch size as a global batch that splits evenly over the
  replicas (rounded up, with a notice, where it does not): every replica
  then gets the same static per-replica shape, which a TPU requires."""
  replicas = int(getattr(strategy, 'num_replicas_in_sync', 1) or 1)
  if batch_size % replicas == 0:
    return batch_size
  rounded = math.ceil(batch_size / replicas) * replicas
  print(f'[modelsteal] notice: batch size {batch_size} does not split over '
        f'{replicas} replicas; using {rounded} ({rounded // replicas} per '
        'replica).', flush=True)
  return rounded


def needs_static_shapes(strategy) -> bool:
  """True on a TPU: every batch must have the same shape (no partial last
  batch), or XLA compiles the step again."""
  return 'TPUStrategy' in type(strategy).__name__


def lost_worker_error(e: Exception) -> WorkerLostError:
  """The clear error for a collective that failed because a peer died."""
  return WorkerLostError(
      '{distribute}=multiworker: a worker of the cluster stopped answering '
      f'mid-run ({type(e).__name__}: '
      f'{literal(str(e).splitlines()[0][:200])}). '
      'Nothing of the unfinished step was kept: start every worker again with '
      'the same command and TF_CONFIG; finished steps are reused.')


def _env_seconds(name: str, default: int) -> int:
  value = os.environ.get(name, '')
  if not value:
    return default
  if not value.isdigit() or int(value) < 1:
    raise DistributeError(f'{name} must be a whole number of seconds >= 1, '
                          f'got {value!r}.')
  return int(value)


def _set_cluster_timeouts() -> None:
  """How long a worker waits for the others to start
  (`MODELSTEAL_CLUSTER_WAIT_S`, default 600 s; TensorFlow's default is to
  wait forever) and how often it checks that they are alive
  (`MODELSTEAL_HEALTH_CHECK_S`, default 30 s, TensorFlow's): a dead peer is
  noticed within about three checks and ends the run with `WorkerLostError`.
  """
  from tensorflow.python.distribute import collective_all_reduce_strategy as c  # pylint: disable=g-import-not-at-top
  ext = c.CollectiveAllReduceExtended
  ext._check_health_initial_timeout = _env_seconds(  # pylint: disable=protected-access
      'MODELSTEAL_CLUSTER_WAIT_S', 600)
  interval = _env_seconds('MODELSTEAL_HEALTH_CHECK_S', 30)
  ext._check_health_interval = interval  # pylint: disable=protected-access
  ext._check_health_timeout = min(10, interval)  # pylint: disable=protected-access


def _patch_keras_for_multiworker() -> None:
  """Two fixes that let Keras 3 `fit` run under MultiWorkerMirroredStrategy
  (keras-team/keras#20585, open): Keras builds the model by all-reducing a
  whole input batch, which the strategy rejects, and averages scalar logs
  over an axis they do not have. Both patched functions fall through to
  Keras' own code unless the strategy is multi-worker, and the patched build
  reads the input signature instead of consuming a batch (which would shift
  the shuffle order against a single-worker run). The two-worker test
  (`tests/multiworker_test.py`) fails if a Keras upgrade breaks this."""
  from keras.src.backend.tensorflow import trainer as kt  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  if getattr(kt, '_modelsteal_patched', False):
    return
  multi = kt._collective_all_reduce_multi_worker  # pylint: disable=protected-access
  reduce_per_replica = kt.reduce_per_replica
  build = kt.TensorFlowTrainer._maybe_symbolic_build  # pylint: disable=protected-access

  def patched_reduce(values, strategy, reduction='auto'):
    if multi(strategy) and reduction in ('auto', 'mean'):
      def mean(v):
        if isinstance(v, tf.distribute.DistributedValues):
          return strategy.reduce('MEAN', v, axis=None)
        return v
      return tf.nest.map_structure(mean, values)
    return reduce_per_replica(values, strategy, reduction)

  def patched_build(self, iterator=None, data_batch=None):
    if iterator is None or not multi(self.distribute_strategy):
      return build(self, iterator=iterator, data_batch=data_batch)
    spec = iterator.data_adapter.get_tf_dataset().element_spec
    with self.distribute_strategy.scope():
      self._symbolic_build(data_batch=spec)  # pylint: disable=protected-access

  kt.reduce_per_replica = patched_reduce
  kt.TensorFlowTrainer._maybe_symbolic_build = patched_build  # pylint: disable=protected-access
  kt._modelsteal_patched = True  # pylint: disable=protected-access
