"""Class-conditional generators as a data source.

One interface (`Generator.generate(class_name_or_index, n, seed)` ->
float32 (n, H, W, C) in [0, 1], with `class_names` and `image_shape`),
two kinds of implementation:

* `SavedModelGenerator`: any SavedModel with a `generate(label, noise)`
  signature, used as a black box; the built-in conditional VAE
  (`cvae.train_cvae`, `cvae.export_generator`, component
  `train_generator`) is exported as one.
* `RestGenerator`: a text-to-image web service (OpenAI-style JSON, raw
  image bytes, async jobs to poll, or a generator served by
  `pipelines.serve`), one prompt per class name.

`mine_images` (a component) caches images as they arrive and writes an
ordinary `Examples` artifact; `sample_per_class` draws the real baseline.
"""

from modelsteal.synthetic.base import CLASS_NAMES
from modelsteal.synthetic.base import Generator
from modelsteal.synthetic.base import GeneratorError
from modelsteal.synthetic.base import class_names_for
from modelsteal.synthetic.components import generator_ref_from_model
from modelsteal.synthetic.components import make_generator
from modelsteal.synthetic.components import mine_images
from modelsteal.synthetic.components import parse_filter
from modelsteal.synthetic.components import sample_per_class
from modelsteal.synthetic.components import train_generator
from modelsteal.synthetic.saved_model import SavedModelGenerator
from modelsteal.synthetic.saved_model import generator_ref_from_path

# Generators the toolkit trains itself: name -> what it is.
BUILTIN_GENERATORS = {
    'cvae': 'conditional VAE with Bernoulli pixels, trained here on the '
            "attacker's pool split of --dataset (python -m "
            'pipelines.train_generator)',
}

__all__ = [
    'BUILTIN_GENERATORS', 'CLASS_NAMES', 'Generator', 'GeneratorError',
    'SavedModelGenerator', 'class_names_for', 'generator_ref_from_model',
    'generator_ref_from_path', 'make_generator', 'mine_images', 'parse_filter',
    'sample_per_class', 'train_generator',
]
