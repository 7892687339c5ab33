"""Accuracy and fidelity of stolen students against one victim, from their
SavedModels, on the real MNIST test set (a recheck outside the pipeline's
answer cache).

    python benchmarks/synthetic_fidelity.py MNIST_NPZ VICTIM_DIR NAME=STUDENT_DIR...
"""

import sys

import numpy as np

from modelsteal.export import load_predictor


def main(argv):
  npz, victim_dir, *students = argv[1:]
  with np.load(npz) as d:
    x = (d['x_test'][..., None] / 255.0).astype(np.float32)
    y = d['y_test']
  victim = load_predictor(victim_dir)(x).argmax(1)
  print(f'victim accuracy {100 * (victim == y).mean():.2f}%')
  for spec in students:
    name, path = spec.split('=', 1)
    s = load_predictor(path)(x).argmax(1)
    print(f'{name}: accuracy {100 * (s == y).mean():.2f}%, fidelity '
          f'{100 * (s == victim).mean():.2f}%')


if __name__ == '__main__':
  main(sys.argv)
