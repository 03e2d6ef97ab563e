"""What the tests that train a model need, and why they skip when it is missing."""

from __future__ import annotations

import importlib.util
import shutil


def missing_training_tools() -> str | None:
    """None when TensorFlow, espeak-ng and sox are all here; else the reason to skip."""
    if importlib.util.find_spec("tensorflow") is None:
        return "tensorflow is not installed (pip install 'kwsd[train]')"
    for tool in ("espeak-ng", "sox"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (apt-get install {tool})"
    return None


def missing_tensorflow() -> str | None:
    """None when TensorFlow is importable; else the reason to skip a comparison with its ops."""
    if importlib.util.find_spec("tensorflow") is None:
        return "tensorflow is not installed (pip install 'kwsd[train]')"
    return None
