"""Where a benchmark finds its data: a path given on the command line, else
under `$MODELSTEAL_DATA`, else a clear exit (never one machine's path)."""

import os
import sys


def mnist_npz(arg: str | None) -> str:
  """The MNIST npz: `arg`, or `$MODELSTEAL_DATA/mnist/mnist.npz`."""
  if arg:
    return arg
  if os.environ.get('MODELSTEAL_DATA'):
    return os.path.join(os.environ['MODELSTEAL_DATA'], 'mnist', 'mnist.npz')
  sys.exit('give the MNIST npz as the first argument or set MODELSTEAL_DATA '
           '(a folder holding mnist/mnist.npz)')
