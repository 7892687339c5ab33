"""modelsteal: model stealing and unlearnable data for Keras image classifiers.

The public API, as one readable list (see each module for details).
"""

__version__ = '0.1.0'
