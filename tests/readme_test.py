"""Every command in README.md runs, offline, in smoke mode: the README cannot
drift from the code.

The commands are read out of README.md (fenced `bash` / `python` blocks and
the Pipelines table) and run in README order in one temporary directory, so
later commands find what earlier ones made (`runs/`, the NTGA `.npz`).
README.md ("This README is tested") lists what is changed and why: `--smoke`
is added to pipeline commands; placeholders (`<id>`, `PATH`, `model.keras`,
`HOST:8501`, `NAME`) are filled with real paths and a real server; the
server listens on a free port and `serve` returns once listening;
`fashion_mnist` (needs internet) becomes a local 28x28 npz; `pip install` is
skipped (the environment is installed already), and so is `python -m pytest`
(this suite itself; `.ci/run` runs it, checked below).

Pipelines run in this process (their `main` under `flagsaver`), as
tests/steal_pipeline_test.py does, which is far cheaper than subprocesses;
`curl` lines run through bash, exactly as shown apart from the port.
"""

import gc
import glob
import importlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
from absl import flags
from absl.testing import flagsaver

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(ROOT, 'README.md')
TEST_COMMAND = 'pip install -e ".[test]" && python -m pytest'


def readme_commands(text: str) -> list[tuple[str, str]]:
  """(kind, command) in README order; kind is 'shell' or 'python'.

  Shell commands come from ```bash / ```sh blocks (one per line, `&&`
  splits, `#` comment lines dropped) and from the first code span of each
  Pipelines table row.
  """
  found = []  # (position, kind, command)
  for m in re.finditer(r'```(bash|sh|python)\n(.*?)```', text, re.S):
    if m.group(1) == 'python':
      found.append((m.start(), 'python', m.group(2)))
      continue
    for line in m.group(2).splitlines():
      if line.lstrip().startswith('#'):
        continue
      for part in line.split(' && '):
        if part.strip():
          found.append((m.start(), 'shell', part.strip()))
  table = re.search(r'^## Pipelines\n(.*?)^## ', text, re.S | re.M)
  for m in re.finditer(r'^\| `([^`]+)`', table.group(1), re.M):
    found.append((table.start(1) + m.start(), 'shell', m.group(1)))
  found.sort(key=lambda f: f[0])  # stable: lines of a block keep their order
  return [(kind, cmd) for _, kind, cmd in found]


COMMANDS = readme_commands(open(README).read())

# Every pipeline the README runs is imported here, outside any flagsaver: a
# module first imported inside one would lose its flag definitions when the
# flagsaver restores the flags (absl deletes flags it did not save).
for _name in sorted({m.group(1) for _, c in COMMANDS
                     for m in [re.match(r'python -m pipelines\.(\w+)', c)] if m}):
  importlib.import_module(f'pipelines.{_name}')


class _State:
  """What earlier commands made, for the placeholders of later ones."""

  def __init__(self, root):
    self.root = root
    self.servers = []  # (BackgroundServer, model name)
    self.done = set()  # commands already run

  def student_model(self) -> str:
    """A student's Model artifact dir (model/) from the default steal run."""
    import pandas as pd
    # the first run (the README's default command), not the first by name:
    # later sections steal other victims (CIFAR-10 shapes)
    csv = sorted(glob.glob(os.path.join(self.root, 'runs', 'steal', '*',
                                        'results.csv')), key=os.path.getmtime)
    assert csv, 'no steal run yet: the README must start with one'
    sm = pd.read_csv(csv[0])['saved_model'].iloc[1]  # .../model/serving/1
    return os.path.dirname(os.path.dirname(sm))

  def student_id(self) -> str:
    return os.path.basename(os.path.dirname(self.student_model()))

  def poisoned(self) -> str:
    """The NTGA artifact an earlier `pipelines.ntga` command made."""
    found = sorted(glob.glob(os.path.join(self.root, 'runs', 'generate_ntga',
                                          '*', 'poisoned')))
    assert found, 'no NTGA artifact yet: run pipelines.ntga first'
    return found[0]


@pytest.fixture(scope='module')
def state(tmp_path_factory):
  s = _State(str(tmp_path_factory.mktemp('readme')))
  yield s
  for server, _ in s.servers:
    server.stop()


def _fashion_standin(root) -> str:
  """A local 28x28 dataset of another distribution (inverted digits)."""
  path = os.path.join(root, 'fashion_standin.npz')
  if not os.path.exists(path):
    from modelsteal import data
    ds = data.load_dataset('offline_mnist')
    np.savez(path, x_train=1.0 - ds.x_train[:1500], y_train=ds.y_train[:1500],
             x_test=1.0 - ds.x_test[:300], y_test=ds.y_test[:300])
  return path


def _run_pipeline(name: str, args: list[str], capsys) -> str:
  module = importlib.import_module(f'pipelines.{name}')
  with flagsaver.flagsaver():
    flags.FLAGS([name] + args + ['--smoke'])
    try:
      module.main([name])
    except SystemExit as e:
      err = capsys.readouterr().err
      pytest.fail(f'pipelines.{name} {" ".join(args)} exited {e.code}:\n'
                  f'{err[-3000:]}')
  return capsys.readouterr().out


def _serve(state, args, monkeypatch, capsys):
  """`pipelines.serve` as written, but on a free port and in the background."""
  from modelsteal import serving
  started = {}

  def background(app, host='127.0.0.1', port=8501, on_ready=None):
    del port  # 8501 may be taken on a test machine
    server = serving.BackgroundServer(app, host, 0).start()
    started['server'] = server
    if on_ready:
      on_ready(server.port)

  monkeypatch.setattr(serving, 'serve_forever', background)
  if not any(a.startswith('--grpc_port') for a in args):
    args = [*args, '--grpc_port=0']  # 8500 may be taken too
  out = _run_pipeline('serve', args, capsys)
  gc.unfreeze()  # serve freezes the heap for its own process; not ours
  name = flags.FLAGS['model_name'].default or 'model'
  for a in args:
    if a.startswith('--model_name='):
      name = a.split('=', 1)[1]
  assert f'/v1/models/{name}' in out
  grpc = re.search(r'\[serve\] grpc: (\S+)', out)
  started['server'].grpc_address = grpc.group(1) if grpc else None
  state.servers.append((started['server'], name))
  return started['server'], name


def _server(state, monkeypatch, capsys):
  """The latest server a README command started, else one for a student."""
  if not state.servers:
    _serve(state, [f'--model_dir={state.student_model()}/serving',
                   '--model_name=mnist'], monkeypatch, capsys)
  return state.servers[-1]


def _fill(cmd: str, state, monkeypatch, capsys) -> str:
  if '<id>' in cmd:
    cmd = cmd.replace('<id>', state.student_id())
  if '--model_dir=PATH' in cmd:
    cmd = cmd.replace('PATH', state.student_model() + '/serving')
  if '--poisoned=PATH' in cmd:
    cmd = cmd.replace('PATH', state.poisoned())
  if re.search(r'--victim_path=model\.keras\b', cmd):
    shutil.copy(os.path.join(state.student_model(), 'model.keras'),
                os.path.join(state.root, 'model.keras'))
  if '--query_data=fashion_mnist' in cmd:
    cmd = cmd.replace('fashion_mnist', _fashion_standin(state.root))
  if ':8501' in cmd:
    server, name = _server(state, monkeypatch, capsys)
    cmd = re.sub(r'(HOST|127\.0\.0\.1):8501', f'127.0.0.1:{server.port}', cmd)
    cmd = cmd.replace('/models/NAME', f'/models/{name}')
  if ':8500' in cmd:
    server, name = _server(state, monkeypatch, capsys)
    assert server.grpc_address, 'the README server serves no gRPC'
    cmd = re.sub(r'(HOST|127\.0\.0\.1):8500', server.grpc_address, cmd)
    cmd = cmd.replace(':8500/NAME', f':8500/{name}').replace(
        f'{server.grpc_address}/NAME', f'{server.grpc_address}/{name}')
  return cmd


def _check_uq_all_methods(state, out):
  """`pipelines.uq --methods=all` trained every UQ method and both ensemble
  variants, from one set of answers, and wrote its table, diversity trace
  and plot (the study's checks; tests/uq_pipeline_test.py covers its
  errors and resumption)."""
  import pandas as pd
  from modelsteal import uq
  (csv,) = glob.glob(os.path.join(state.root, 'runs', 'uq', '*', 'results.csv'))
  out_dir = os.path.dirname(csv)
  df = pd.read_csv(csv)
  assert list(df['method']) == ['plain', *uq.UQ_METHODS, 'ensemble',
                                'ensemble'], list(df['method'])
  assert df['arch'].iloc[-2].startswith('ensemble:mnist_cnn+lenet5+mnist_mlp')
  assert 'bootstrap=1' in df['arch'].iloc[-1]
  assert df['budget'].nunique() == 1  # smoke: the largest budget only
  for col in ('fidelity', 'accuracy', 'fidelity_heldout', 'ece',
              'member_fidelity_best', 'member_fidelity_mean'):
    assert df[col].between(0, 1).all(), col
  # best member >= mean member; a plain student is its own only member
  assert (df['member_fidelity_best'] >= df['member_fidelity_mean'] - 1e-9).all()
  plain = df.iloc[0]
  assert plain['member_fidelity_best'] == pytest.approx(plain['fidelity'])
  # every UQ student logged its diversity trace, plotted once per budget
  trace = pd.read_csv(os.path.join(out_dir, 'diversity.csv'))
  assert set(trace['spec']) == set(df['arch'].iloc[1:])
  assert (trace.groupby('spec')['step'].count() >= 2).all()
  (budget,) = set(df['budget'])
  assert os.path.exists(os.path.join(out_dir, f'diversity_b{budget}.png'))
  assert 'm_fid_best' in out and 'results.json' in out
  # every student learned from the same answers: one labelling step
  steps = pd.read_csv(os.path.join(out_dir, 'steps.csv'))['step']
  assert steps.str.startswith('label_queries').sum() == 1, list(steps)


@pytest.mark.slow  # every README command, in order, in one directory
@pytest.mark.parametrize('kind,cmd', COMMANDS,
                         ids=[f'{i:02d}' for i in range(len(COMMANDS))])
def test_readme_command(kind, cmd, state, monkeypatch, capsys, caplog):
  monkeypatch.chdir(state.root)
  if kind == 'python':
    ns = {}
    exec(compile(_fill(cmd, state, monkeypatch, capsys), README, 'exec'), ns)  # pylint: disable=exec-used
    if 'answers' in ns:  # the Library example: one-hot answers
      assert ns['answers'].shape == (100, 10)
      np.testing.assert_array_equal(ns['answers'].sum(1), 1)
    return
  if cmd.startswith('pip install'):
    pytest.skip('pip install: the test environment is installed already')
  if cmd.startswith('export '):
    pytest.skip('sets an environment variable for the next command')
  if '--distribute=multiworker' in cmd:
    pytest.skip('needs two machines with TF_CONFIG; '
                'tests/multiworker_test.py runs two workers on loopback')
  if cmd.startswith('python -m pytest'):
    pytest.skip('the test suite itself, whole or its fast tier (.ci/run '
                'runs it; see test_ci_runs_the_readme_test_command)')
  cmd = _fill(cmd, state, monkeypatch, capsys)
  if cmd in state.done and 'pipelines.serve' not in cmd:
    pytest.skip('the same command ran earlier in the README (cached)')
  state.done.add(cmd)
  m = re.match(r'python -m pipelines\.(\w+)((?: --\S+)*)$', cmd)
  if m:
    args = m.group(2).split()
    if m.group(1) == 'serve':
      _serve(state, args, monkeypatch, capsys)
    else:
      out = _run_pipeline(m.group(1), args, capsys)
      assert 'total time' in out
      # quiet output: TensorFlow, Keras and TFDS log no warnings a user
      # would see (by logger, or by source file for their absl records)
      libs = ('tensorflow', 'keras', 'tensorflow_datasets')
      noise = [f'{r.name} {r.pathname}: {r.getMessage()[:200]}'
               for r in caplog.records if r.levelno >= logging.WARNING and (
                   r.name.split('.')[0] in libs or
                   any(f'{os.sep}{lib}{os.sep}' in r.pathname for lib in libs))]
      assert not noise, noise
      if m.group(1) == 'uq' and '--methods=all' in args:
        _check_uq_all_methods(state, out)
    return
  if 'curl ' in cmd:
    if not shutil.which('curl'):
      pytest.skip('curl is not installed on this machine')
    env = dict(os.environ, PATH=os.path.dirname(sys.executable) + os.pathsep
               + os.environ.get('PATH', ''))
    proc = subprocess.run(['bash', '-c', cmd], capture_output=True, text=True,
                          env=env, timeout=120, cwd=state.root)
    assert proc.returncode == 0, proc.stderr
    reply = json.loads(proc.stdout)
    assert 'error' not in reply, reply
    if ':predict' in cmd:
      (pred,) = reply['predictions']
      assert len(pred['probabilities']) == 10 and 0 <= pred['label'] < 10
    return
  pytest.fail(f'README command of a kind this test does not know: {cmd!r}; '
              'teach tests/readme_test.py to run it.')


def test_every_pipeline_command_in_the_readme_is_run():
  """The parser finds every `python -m pipelines.X` the README mentions in
  a block or the table (prose mentions are not commands)."""
  text = open(README).read()
  parsed = ' '.join(cmd for _, cmd in COMMANDS)
  blocks = ' '.join(re.findall(r'```(?:bash|sh)\n(.*?)```', text, re.S))
  table = re.search(r'^## Pipelines\n(.*?)^## ', text, re.S | re.M).group(1)
  for name in set(re.findall(r'python -m pipelines\.(\w+)', blocks + table)):
    assert f'python -m pipelines.{name}' in parsed
  assert len([c for k, c in COMMANDS if 'pipelines.' in c]) >= 15
  assert sum(k == 'python' for k, _ in COMMANDS) >= 2


def test_ci_runs_the_readme_test_command():
  text = open(README).read()
  assert TEST_COMMAND in text
  ci = open(os.path.join(ROOT, '.ci', 'run')).read()
  assert TEST_COMMAND in ci.splitlines()


def test_command_parser_splits_blocks_and_table():
  text = ('```bash\npip install x && python -m pipelines.a --f=1\n'
          '# a comment\ncurl http://h\n```\n## Pipelines\n\n| command | what |\n|---|---|\n'
          '| `python -m pipelines.b` (or `c`) | b |\n\n## Next\n'
          '```python\nprint(1)\n```\n')
  assert readme_commands(text) == [
      ('shell', 'pip install x'), ('shell', 'python -m pipelines.a --f=1'),
      ('shell', 'curl http://h'), ('shell', 'python -m pipelines.b'),
      ('python', 'print(1)\n')]
