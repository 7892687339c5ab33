"""The built-in generator's flags, shared by `pipelines.train_generator`
and `pipelines.synthetic` (a helper module, not a pipeline)."""

from __future__ import annotations

from absl import flags

from modelsteal.experiments import generator

EPOCHS = flags.DEFINE_integer('generator_epochs', 30,
                               'Epochs of the built-in generator.')
LATENT_DIM = flags.DEFINE_integer('latent_dim', 16,
                               'Latent size of the built-in generator.')
DECODER = flags.DEFINE_enum(
    'generator_decoder', generator.DECODER, ['mlp', 'conv'], 'Decoder of '
    'the built-in generator: an MLP, or transposed convolutions (image '
    'sides: multiples of 4).')
SAMPLING = flags.DEFINE_enum(
    'generator_latent', generator.LATENT, ['prior', 'fitted'], 'Latent '
    'codes of the built-in generator: the prior N(0, I), or per-class '
    'Gaussians fitted after training to the codes of the training images.')

# TrainGeneratorConfig fields whose flag is not `--FIELD`.
FLAG_NAMES = {'epochs': '--generator_epochs', 'decoder': '--generator_decoder',
              'latent': '--generator_latent'}
