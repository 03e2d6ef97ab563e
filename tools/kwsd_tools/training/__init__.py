"""kwsd's training tools as a package: data set, features, models, training loop and export.

The command-line entries are ``tools/train.py`` (train.py's flags) and ``tools/export.py``
(freeze.py's job: bundles, C array). TensorFlow is imported only where a model is built or
trained, so the data set code runs (and is tested) without it.
"""
