"""Data-free model extraction: a generator learns what to ask.

DFME (Truong et al., CVPR 2021, https://arxiv.org/abs/2011.14779): a
generator G(z) makes the queries; the student S learns to match the victim V
on them; G learns to make queries on which S and V disagree most. V gives no
gradient, so the gradient of the disagreement with respect to each query is
estimated from extra queries at x + eps * u along `directions` random unit
vectors u (forward differences, zeroth-order). MAZE (Kariyappa et al., CVPR
2021, https://arxiv.org/abs/2005.03161) makes the same loop with a KL loss and
more directions; its choices are options here.

With label-only answers no difference quotient exists (top-1 answers are
piecewise constant); the generator then maximises the student's error
against the victim's labels plus the entropy of the student's mean
prediction over the batch (so queries cover every class), in the spirit of
hard-label data-free stealing (Sanyal et al., CVPR 2022); no probes are paid.

Every image the victim sees goes through the `Oracle`, probes included, so
its budget is exact; the loop stops before a step the budget cannot pay.
State (generator, student, both optimisers, random generators, queries paid,
the curve) is checkpointed every `checkpoint_every` queries; answers paid
since the last checkpoint go to an append-only journal, so a resumed run
asks the same queries again and is answered from the journal: nothing is
paid twice.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import struct
import time

import numpy as np

from modelsteal.errors import ConfigError
from modelsteal.errors import literal

LOSSES = ('l1', 'kl')
GENERATORS = ('dfme', 'maze')


@dataclasses.dataclass(frozen=True)
class DataFreeConfig:
  """The loop's settings; DFME's defaults unless MAZE's are asked for.

  Attributes:
    budget: victim queries in all, probes included.
    batch_size: generated images per step.
    directions: zeroth-order directions per image (DFME 1; MAZE 10).
    epsilon: probe step along each unit direction.
    student_steps: student updates per generator update (DFME 5).
    generator_steps: generator updates per round (DFME 1).
    loss: 'l1' on mean-centred log-probabilities (DFME) or 'kl' (MAZE).
    generator: 'dfme' (upsampling convolutions, batch norm) or 'maze'
      (transposed convolutions).
    latent_dim: size of z.
    width: channels of the generator's first convolution (the second has
      half). DFME's is 128, which costs about 16 times the FLOPs of 32 and
      dominated the loop on a CPU (BUILD_NOTES.md, "Data-free stealing").
    lr_student: SGD (momentum 0.9, weight decay 5e-4), cosine decay.
    lr_generator: Adam, cosine decay.
    diversity: weight of the class-entropy term (label-only answers).
    checkpoint_every: queries between checkpoints (and curve points).
    probe_size: test images for the fidelity curve (never queried).
  """
  budget: int = 2_000_000
  batch_size: int = 256
  directions: int = 1
  epsilon: float = 1e-3
  student_steps: int = 5
  generator_steps: int = 1
  loss: str = 'l1'
  generator: str = 'dfme'
  latent_dim: int = 100
  width: int = 32
  lr_student: float = 0.1
  lr_generator: float = 1e-4
  diversity: float = 1.0
  checkpoint_every: int = 100_000
  probe_size: int = 2000

  def __post_init__(self):
    if self.loss not in LOSSES:
      raise ConfigError('datafree', f': unknown loss {literal(self.loss)}; '
                        f'valid: {", ".join(LOSSES)}.')
    if self.generator not in GENERATORS:
      raise ConfigError('datafree', ': unknown generator '
                        f'{literal(self.generator)}; valid: '
                        f'{", ".join(GENERATORS)}.')
    for f in ('batch_size', 'directions', 'student_steps', 'generator_steps',
              'latent_dim', 'width', 'checkpoint_every', 'probe_size'):
      if getattr(self, f) < 1:
        raise ConfigError('datafree', f': {f} must be at least 1, got '
                          f'{getattr(self, f)}.')
    for f in ('epsilon', 'lr_student', 'lr_generator'):
      if not getattr(self, f) > 0:
        raise ConfigError('datafree', f': {f} must be positive, got '
                          f'{getattr(self, f)}.')

  def round_queries(self, hard_label: bool) -> int:
    """Queries one round costs: generator steps (with probes) + student
    steps."""
    per_g = self.batch_size * (1 if hard_label else self.directions + 1)
    return (self.generator_steps * per_g +
            self.student_steps * self.batch_size)

  def check_budget(self, hard_label: bool) -> None:
    need = self.round_queries(hard_label)
    if self.budget < need:
      raise ConfigError('budgets', f': {self.budget} queries do not pay for '
                        f'one data-free round ({need} = generator and student '
                        'steps of {datafree} batch_size, directions, '
                        'student_steps); raise the budget.')


def parse_overrides(items) -> dict:
  """['directions=10', 'loss=kl'] -> {field: value} of DataFreeConfig."""
  fields = {f.name: f.type for f in dataclasses.fields(DataFreeConfig)}
  out = {}
  for item in items or ():
    key, sep, value = str(item).partition('=')
    key = key.strip()
    if not sep or key not in fields:
      raise ConfigError('datafree', f': {literal(repr(item))} is not '
                        'FIELD=VALUE with FIELD one of '
                        f'{", ".join(sorted(fields))}.')
    if key in ('loss', 'generator'):
      out[key] = value.strip()
      continue
    try:
      num = float(value)
    except ValueError:
      raise ConfigError('datafree', f': {key} needs a number, got '
                        f'{literal(repr(value))}.') from None
    ints = ('budget', 'batch_size', 'directions', 'student_steps',
            'generator_steps', 'latent_dim', 'width', 'checkpoint_every',
            'probe_size')
    if key in ints and num != int(num):
      raise ConfigError('datafree', f': {key} must be an integer, got '
                        f'{literal(repr(value))}.')
    out[key] = int(num) if key in ints else num
  return out


# -- models --------------------------------------------------------------------


def build_generator(kind: str, latent_dim: int, shape: tuple,
                    width: int = 32):
  """z (latent_dim) -> images of `shape` in [0, 1]."""
  import keras  # pylint: disable=g-import-not-at-top
  from keras import layers  # pylint: disable=g-import-not-at-top
  h, w, c = shape
  if h % 4 or w % 4:
    raise ConfigError('dataset', f': data-free generators make images whose '
                      f'sides divide by 4; {shape} does not.')
  z = keras.Input((latent_dim,))
  x = layers.Dense((h // 4) * (w // 4) * width)(z)
  x = layers.Reshape((h // 4, w // 4, width))(x)
  x = layers.BatchNormalization()(x)
  if kind == 'dfme':
    for filters in (width, max(1, width // 2)):
      x = layers.UpSampling2D()(x)
      x = layers.Conv2D(filters, 3, padding='same')(x)
      x = layers.BatchNormalization()(x)
      x = layers.LeakyReLU(0.2)(x)
  else:  # maze
    for filters in (width, max(1, width // 2)):
      x = layers.Conv2DTranspose(filters, 4, strides=2, padding='same')(x)
      x = layers.BatchNormalization()(x)
      x = layers.ReLU()(x)
  x = layers.Conv2D(c, 3, padding='same')(x)
  x = layers.BatchNormalization(center=False, scale=False)(x)
  out = layers.Activation('tanh')(x)
  out = layers.Rescaling(0.5, offset=0.5)(out)  # [-1, 1] -> [0, 1]
  return keras.Model(z, out, name=f'generator_{kind}')


# -- the zeroth-order gradient ---------------------------------------------------


def unit_directions(rng: np.random.Generator, n: int, m: int,
                    shape: tuple) -> np.ndarray:
  """(n, m, *shape) float32 directions, each of unit L2 norm."""
  u = rng.standard_normal((n, m, int(np.prod(shape)))).astype(np.float32)
  u /= np.linalg.norm(u, axis=2, keepdims=True)
  return u.reshape(n, m, *shape)


def zo_gradient(f0: np.ndarray, fu: np.ndarray, u: np.ndarray,
                epsilon: float) -> np.ndarray:
  """Forward-difference estimate of d f / d x per image.

  Args:
    f0: (n,) f at the images.
    fu: (n, m) f at image + epsilon * u.
    u: (n, m, *shape) unit directions.

  Returns:
    (n, *shape): dim / m * sum_i (f(x + eps u_i) - f(x)) / eps * u_i, whose
    expectation over uniform unit directions is the gradient (up to
    O(eps)); its error falls as 1 / sqrt(m).
  """
  n, m = fu.shape
  dim = int(np.prod(u.shape[2:]))
  coef = (fu - f0[:, None]) / epsilon * (dim / m)
  return np.einsum('nm,nm...->n...', coef, u).astype(np.float32)


def centred_log(p):
  """Mean-centred log-probabilities: DFME's stand-in for the victim's
  logits, from the probabilities it answers."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  lp = tf.math.log(tf.clip_by_value(p, 1e-8, 1.0))
  return lp - tf.reduce_mean(lp, axis=-1, keepdims=True)


def disagreement(kind: str, victim_probs, student_logits):
  """Per-image loss between the victim's answer and the student."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  if kind == 'l1':
    s = student_logits - tf.reduce_mean(student_logits, -1, keepdims=True)
    return tf.reduce_mean(tf.abs(s - centred_log(victim_probs)), axis=-1)
  logq = tf.nn.log_softmax(student_logits, axis=-1)
  p = tf.clip_by_value(victim_probs, 1e-8, 1.0)
  return tf.reduce_sum(p * (tf.math.log(p) - logq), axis=-1)


# -- the answer journal -----------------------------------------------------------


class Journal:
  """Answers paid since the last checkpoint, append-only: per victim call,
  the sha256 of the query bytes and the answers. A resumed run replays
  them for the same queries instead of paying again."""

  _HEAD = struct.Struct('<32sii')

  def __init__(self, path: str):
    self.path = path
    self._replay: list[tuple[bytes, np.ndarray]] = []
    if os.path.exists(path):
      with open(path, 'rb') as f:
        data = f.read()
      pos = 0
      while pos + self._HEAD.size <= len(data):
        digest, n, k = self._HEAD.unpack_from(data, pos)
        end = pos + self._HEAD.size + 4 * n * k
        if end > len(data):
          break  # a torn last entry: that call is asked again
        self._replay.append((digest, np.frombuffer(
            data[pos + self._HEAD.size:end], np.float32).reshape(n, k)))
        pos = end
    self._f = open(path, 'ab')
    self.replayed = 0

  @staticmethod
  def digest(x: np.ndarray) -> bytes:
    return hashlib.sha256(np.ascontiguousarray(x, np.float32)).digest()

  def take(self, x: np.ndarray) -> np.ndarray | None:
    """The journalled answer of the next call, if it asked exactly x."""
    if not self._replay:
      return None
    digest, answers = self._replay.pop(0)
    if digest != self.digest(x) or len(answers) != len(x):
      self._replay.clear()  # the run went another way: ask from here on
      return None
    self.replayed += len(x)
    return answers

  def append(self, x: np.ndarray, answers: np.ndarray) -> None:
    a = np.ascontiguousarray(answers, np.float32)
    self._f.write(self._HEAD.pack(self.digest(x), *a.shape) + a.tobytes())
    self._f.flush()

  def reset(self) -> None:
    """After a checkpoint: nothing before it needs replaying."""
    self._f.close()
    self._replay.clear()
    self._f = open(self.path, 'wb')

  def close(self) -> None:
    self._f.close()


# -- the loop ----------------------------------------------------------------------


def _write_json(path: str, obj) -> None:
  with open(path, 'w') as f:
    json.dump(obj, f)


@dataclasses.dataclass
class Curve:
  """Fidelity against queries paid, one row per checkpoint."""
  rows: list = dataclasses.field(default_factory=list)

  def add(self, **row):
    self.rows.append(row)


class DataFreeAttack:
  """The loop; `run()` until the budget is spent, resumable from `state_dir`.

  Args:
    cfg: the settings.
    oracle: the victim (`modelsteal.oracle.Oracle`, no answer cache needed:
      the journal does its work); its budget should be `cfg.budget` or none.
    student: a Keras model returning logits.
    shape, num_classes: of the victim's inputs and answers.
    probe_x: test images for the fidelity curve (the victim's labels on them
      are computed locally only when `probe_labels` is None).
    probe_labels: the victim's top-1 labels on `probe_x`.
    state_dir: checkpoints, journal, curve.
    seed: all randomness (directions, z, initialisation).
  """

  def __init__(self, cfg: DataFreeConfig, oracle, student, shape: tuple,
               num_classes: int, probe_x: np.ndarray,
               probe_labels: np.ndarray, state_dir: str, seed: int = 0,
               log=lambda line: print(line, flush=True)):
    import keras  # pylint: disable=g-import-not-at-top
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    self.cfg = cfg
    self.oracle = oracle
    self.hard = not oracle.soft
    cfg.check_budget(self.hard)
    self.student = student
    self.shape = tuple(shape)
    self.k = num_classes
    self.probe_x = probe_x
    self.probe_labels = probe_labels
    self.state_dir = state_dir
    self.log = log
    os.makedirs(state_dir, exist_ok=True)
    keras.utils.set_random_seed(seed)
    self.generator = build_generator(cfg.generator, cfg.latent_dim, shape,
                                     cfg.width)
    rounds = max(1, cfg.budget // cfg.round_queries(self.hard))
    self.opt_s = keras.optimizers.SGD(
        keras.optimizers.schedules.CosineDecay(
            cfg.lr_student, rounds * cfg.student_steps),
        momentum=0.9, weight_decay=5e-4)
    self.opt_g = keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(
        cfg.lr_generator, rounds * cfg.generator_steps))
    self.rng = np.random.default_rng(seed)
    self.paid = tf.Variable(0, dtype=tf.int64, trainable=False)
    self.rounds_done = tf.Variable(0, dtype=tf.int64, trainable=False)
    # Build the optimisers' slots now so a checkpoint can restore them.
    self.opt_s.build(self.student.trainable_variables)
    self.opt_g.build(self.generator.trainable_variables)
    self.curve = Curve()
    self.timing = {'victim_s': 0.0, 'student_s': 0.0, 'generator_s': 0.0}
    self._build_steps()
    self.journal = None

  # -- TF steps ------------------------------------------------------------

  def _build_steps(self):
    import keras  # pylint: disable=g-import-not-at-top
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    cfg, student, gen = self.cfg, self.student, self.generator
    hard, loss_kind = self.hard, self.cfg.loss

    @tf.function(reduce_retracing=True)
    def student_step(x, answers):
      with tf.GradientTape() as tape:
        logits = student(x, training=True)
        if hard:
          loss = tf.reduce_mean(keras.losses.categorical_crossentropy(
              answers, logits, from_logits=True))
        else:
          loss = tf.reduce_mean(disagreement(loss_kind, answers, logits))
      grads = tape.gradient(loss, student.trainable_variables)
      self.opt_s.apply_gradients(zip(grads, student.trainable_variables))
      return loss

    @tf.function(reduce_retracing=True)
    def generate(z):
      return gen(z, training=True)

    @tf.function(reduce_retracing=True)
    def student_loss_at(x, answers):
      return disagreement(loss_kind, answers, student(x, training=False))

    @tf.function(reduce_retracing=True)
    def generator_step_zo(z, grad_x):
      # ascend the disagreement along the estimated d loss / d x
      with tf.GradientTape() as tape:
        x = gen(z, training=True)
        surrogate = -tf.reduce_sum(x * grad_x) / tf.cast(tf.shape(x)[0],
                                                         tf.float32)
      grads = tape.gradient(surrogate, gen.trainable_variables)
      self.opt_g.apply_gradients(zip(grads, gen.trainable_variables))
      return surrogate

    @tf.function(reduce_retracing=True)
    def generator_step_hard(z, labels_1hot):
      with tf.GradientTape() as tape:
        x = gen(z, training=True)
        logits = student(x, training=False)
        err = tf.reduce_mean(keras.losses.categorical_crossentropy(
            labels_1hot, logits, from_logits=True))
        mean_p = tf.reduce_mean(tf.nn.softmax(logits), axis=0)
        entropy = -tf.reduce_sum(mean_p * tf.math.log(mean_p + 1e-8))
        loss = -err - cfg.diversity * entropy
      grads = tape.gradient(loss, gen.trainable_variables)
      self.opt_g.apply_gradients(zip(grads, gen.trainable_variables))
      return loss

    self._student_step = student_step
    self._generate = generate
    self._student_loss_at = student_loss_at
    self._generator_step_zo = generator_step_zo
    self._generator_step_hard = generator_step_hard

  # -- the victim ---------------------------------------------------------

  def _ask(self, x: np.ndarray) -> np.ndarray:
    started = time.perf_counter()
    got = self.journal.take(x)
    if got is not None:
      self.oracle.asked += len(x)  # used, not paid again
    else:
      got = self.oracle.query(x)
      self.journal.append(x, got)
    self.paid.assign_add(len(x))
    self.timing['victim_s'] += time.perf_counter() - started
    return got

  def _z(self) -> np.ndarray:
    return self.rng.standard_normal(
        (self.cfg.batch_size, self.cfg.latent_dim)).astype(np.float32)

  # -- one round ------------------------------------------------------------

  def _generator_round(self) -> float:
    cfg = self.cfg
    z = self._z()
    t = time.perf_counter()
    x = self._generate(z).numpy()
    self.timing['generator_s'] += time.perf_counter() - t
    if self.hard:
      answers = self._ask(x)
      t = time.perf_counter()
      loss = float(self._generator_step_hard(z, answers))
      self.timing['generator_s'] += time.perf_counter() - t
      return loss
    m = cfg.directions
    u = unit_directions(self.rng, len(x), m, self.shape)
    probes = (x[:, None] + cfg.epsilon * u).reshape(-1, *self.shape)
    answers = self._ask(np.concatenate([x, probes]))
    t = time.perf_counter()
    f = self._student_loss_at(np.concatenate([x, probes]), answers).numpy()
    grad = zo_gradient(f[:len(x)], f[len(x):].reshape(len(x), m), u,
                       cfg.epsilon)
    loss = float(self._generator_step_zo(z, grad))
    self.timing['generator_s'] += time.perf_counter() - t
    return loss

  def _student_round(self) -> float:
    loss = 0.0
    for _ in range(self.cfg.student_steps):
      z = self._z()
      t = time.perf_counter()
      x = self._generate(z).numpy()
      self.timing['generator_s'] += time.perf_counter() - t
      answers = self._ask(x)
      t = time.perf_counter()
      loss = float(self._student_step(x, answers))
      self.timing['student_s'] += time.perf_counter() - t
    return loss

  # -- state ------------------------------------------------------------------

  def fidelity(self) -> float:
    logits = self.student.predict(self.probe_x, batch_size=1000, verbose=0)
    return float((logits.argmax(1) == self.probe_labels).mean())

  def _variables(self) -> list:
    """Everything a resumed run needs, in a fixed order: both models (their
    dropout seed states included), both optimisers, the counters."""
    return [*self.student.variables, *self.generator.variables,
            *self.opt_s.variables, *self.opt_g.variables, self.paid,
            self.rounds_done]

  def _save(self):
    from modelsteal.files import atomic_write  # pylint: disable=g-import-not-at-top
    arrays = {f'v{i}': np.asarray(v.numpy() if hasattr(v, 'numpy') else v)
              for i, v in enumerate(self._variables())}
    state = {'rng': self.rng.bit_generator.state, 'rows': self.curve.rows,
             'timing': self.timing, 'count': len(arrays)}

    def write_npz(path):
      with open(path, 'wb') as f:
        np.savez(f, **arrays)

    atomic_write(os.path.join(self.state_dir, 'state.npz'), write_npz)
    atomic_write(os.path.join(self.state_dir, 'state.json'),
                 lambda path: _write_json(path, state))
    self.journal.reset()

  def _restore(self) -> bool:
    json_path = os.path.join(self.state_dir, 'state.json')
    if not os.path.exists(json_path):
      return False
    with open(json_path) as f:
      state = json.load(f)
    variables = self._variables()
    with np.load(os.path.join(self.state_dir, 'state.npz')) as z:
      if state['count'] != len(variables) or len(z.files) != len(variables):
        raise ConfigError('datafree', f': the checkpoint in '
                          f'{literal(self.state_dir)} is of another student, '
                          'generator or settings; pass {workdir} elsewhere or '
                          'delete it.')
      for i, v in enumerate(variables):
        v.assign(z[f'v{i}'])
    self.rng.bit_generator.state = state['rng']
    self.curve.rows = state['rows']
    self.timing.update(state['timing'])
    # what the victim was paid before the checkpoint counts against the
    # budget of this run too
    self.oracle.asked = int(self.paid.numpy())
    self.oracle.paid = int(self.paid.numpy())
    return True

  def run(self, progress=None) -> Curve:
    """Rounds until the next would pass the budget; checkpoints on the way."""
    cfg = self.cfg
    resumed = self._restore()
    self.journal = Journal(os.path.join(self.state_dir, 'journal.bin'))
    per_round = cfg.round_queries(self.hard)
    if resumed:
      self.log(f'[datafree] resumed at {int(self.paid.numpy()):,} queries '
               f'(round {int(self.rounds_done.numpy())})')
    else:
      self.curve.add(queries=0, fidelity=self.fidelity(), seconds=0.0)
    started = time.perf_counter() - (self.curve.rows[-1]['seconds']
                                     if self.curve.rows else 0.0)
    next_ckpt = (int(self.paid.numpy()) // cfg.checkpoint_every + 1) * (
        cfg.checkpoint_every)
    g_loss = s_loss = float('nan')
    try:
      while int(self.paid.numpy()) + per_round <= cfg.budget:
        for _ in range(cfg.generator_steps):
          g_loss = self._generator_round()
        s_loss = self._student_round()
        self.rounds_done.assign_add(1)
        paid = int(self.paid.numpy())
        if progress is not None:
          progress.update(per_round, student_loss=s_loss,
                          generator_loss=g_loss)
        if paid >= next_ckpt or paid + per_round > cfg.budget:
          fid = self.fidelity()
          self.curve.add(queries=paid, fidelity=fid,
                         seconds=round(time.perf_counter() - started, 1),
                         student_loss=s_loss, generator_loss=g_loss)
          rate = paid / max(1e-9, time.perf_counter() - started)
          self.log(f'[datafree] {paid:,} queries paid: fidelity '
                   f'{100 * fid:.2f}% on {len(self.probe_x)} test images, '
                   f'{rate:,.0f} queries/s')
          self._save()
          next_ckpt = (paid // cfg.checkpoint_every + 1) * cfg.checkpoint_every
    finally:
      self.journal.close()
    return self.curve

  def sample_grid(self, per_class: int = 8, candidates: int = 4096):
    """Generated images the victim's top-1 sorts into each class (victim
    answers on `candidates` fresh images are paid only if the budget
    allows; else the student's labels are used and said so)."""
    z = self.rng.standard_normal((candidates, self.cfg.latent_dim)).astype(
        np.float32)
    x = self.generator.predict(z, batch_size=512, verbose=0)
    labels = self.student.predict(x, batch_size=512, verbose=0).argmax(1)
    return x, labels
