"""Unlearnable data: Neural Tangent Generalization Attacks (NTGA).

Yuan & Wu, "Neural Tangent Generalization Attacks", ICML 2021,
https://arxiv.org/abs/2106.02963.

* `generate_ntga`: the component that writes a poisoned copy of a training
  set (`modelsteal.ntga.generate`);
* `export_npz`: the poisoned set as one `.npz` to hand to others;
* `modelsteal.ntga.kernels`: the surrogates' neural tangent kernels;
* `modelsteal.ntga.attack`: the GP mean in closed form and block-wise PGD.

Importing this package does not import JAX; `kernels` and `attack` do, and
`generate_ntga` imports them when it runs.
"""

from modelsteal.ntga.generate import DEFAULTS
from modelsteal.ntga.generate import dataset_defaults
from modelsteal.ntga.generate import export_npz
from modelsteal.ntga.generate import generate_ntga

SURROGATES = ('fnn', 'cnn')

__all__ = ['DEFAULTS', 'SURROGATES', 'dataset_defaults', 'export_npz',
           'generate_ntga']
