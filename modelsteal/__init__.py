"""modelsteal: model stealing and unlearnable data for Keras image classifiers.

The public API, as one readable list. Importing `modelsteal` loads neither
TensorFlow nor JAX; the modules that need them import them when called, so
the JAX side (`modelsteal.ntga`) runs without TF in the process.

Components and artifacts (`modelsteal.component`, `modelsteal.artifacts`):
  component, InputArtifact, OutputArtifact, Parameter, RunResult,
  Artifact, Examples, Model, Evaluation
Data (`modelsteal.data`):
  load_dataset, Dataset, DATASETS, import_dataset, split_data, check_images
Victims and oracles (`modelsteal.victims`, `modelsteal.oracle`):
  VICTIMS, get_victim, Oracle, LocalOracle, make_oracle, AnswerCache,
  BudgetExceededError
Output modes and defences (`modelsteal.defenses`):
  parse_output, OUTPUT_MODES
Attacks (`modelsteal.attacks`):
  label_queries, train_model, evaluate_model, select_queries,
  QUERY_STRATEGIES
UQ students (`modelsteal.uq`):
  UQ_METHODS, parse_spec, fit, UQStudent, load_student,
  export_uq_saved_model; components `train_uq_model`, `evaluate_uq_model`
  in `modelsteal.uq.components`; metrics in `modelsteal.uq.diversity`
Generators (`modelsteal.synthetic`):
  Generator, make_generator, SavedModelGenerator, train_generator,
  mine_images, CLASS_NAMES
Unlearnable data (`modelsteal.ntga`, JAX):
  generate_ntga, export_npz; kernels `fnn_ntk`, `cnn_ntk` in
  `modelsteal.ntga.kernels`; `modelsteal.ntga.cpu.configure`
Models, training, export (`modelsteal.models`, `.training`, `.export`):
  ARCHITECTURES, build, TrainConfig, train_classifier, export_saved_model,
  load_predictor
Distribution (`modelsteal.distribute`): get_strategy, use
"""

__version__ = '0.1.0'

from modelsteal.artifacts import Artifact
from modelsteal.artifacts import Evaluation
from modelsteal.artifacts import Examples
from modelsteal.artifacts import Model
from modelsteal.component import InputArtifact
from modelsteal.component import OutputArtifact
from modelsteal.component import Parameter
from modelsteal.component import RunResult
from modelsteal.component import component
from modelsteal.data import DATASETS
from modelsteal.data import Dataset
from modelsteal.data import load_dataset
from modelsteal.defenses import OUTPUT_MODES
from modelsteal.defenses import parse_output
from modelsteal.oracle import AnswerCache
from modelsteal.oracle import BudgetExceededError
from modelsteal.oracle import LocalOracle
from modelsteal.oracle import Oracle
from modelsteal.oracle import make_oracle
from modelsteal.victims import VICTIMS
from modelsteal.victims import get_victim

__all__ = [
    'Artifact', 'Evaluation', 'Examples', 'Model', 'InputArtifact',
    'OutputArtifact', 'Parameter', 'RunResult', 'component', 'DATASETS',
    'Dataset', 'load_dataset', 'OUTPUT_MODES', 'parse_output', 'AnswerCache',
    'BudgetExceededError', 'LocalOracle', 'Oracle', 'make_oracle', 'VICTIMS',
    'get_victim',
]
