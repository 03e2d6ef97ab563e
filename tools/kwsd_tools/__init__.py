"""kwsd's tools, installed as ``kwsd_tools`` with the ``train`` extra: training, data, evaluation
and the benchmarks.

Each tool is a module with a ``main()``: ``kwsd-train`` runs :mod:`kwsd_tools.train`, and so on
(pyproject.toml lists them), and ``python tools/train.py`` from a checkout runs the same code.
TensorFlow is imported only where a model is built or trained.
"""
